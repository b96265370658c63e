public class MathUtil {
    public static int max(int a, int b) {
        if (a > b) {
            return a;
        }
        
    }
}

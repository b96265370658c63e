// "CodeGeeX: Translate File..." and "CodeGeeX: Translate Selection...": pick a target
// language, ask the server, open the result beside the source.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ExecuteCommandRequest } from 'vscode-languageclient/node';
import type { ServerClient } from './serverClient';
import {
  parseTranslateResult, progressIncrements, readTranslationLanguages, TRANSLATE_FILE, TRANSLATE_SELECTION,
  translateArguments, translationChoice, TargetLanguage, TranslateResult, vscodeLanguageId,
} from './translate';

/** `target`: a codeglm language id, for keybindings and tests that skip the picker. */
export async function translateCommand(
  server: ServerClient, log: (line: string) => void, selectionOnly: boolean, target?: string,
): Promise<TranslateResult | undefined> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showErrorMessage('CodeGeeX: open the file to translate first.');
    return undefined;
  }
  const document = editor.document;
  if (selectionOnly && editor.selection.isEmpty) {
    void vscode.window.showErrorMessage('CodeGeeX: select the code to translate first.');
    return undefined;
  }
  // Running = the server has answered `initialize`, whose capabilities name the languages
  // it translates; read them from the current client each time (a restarted server may differ).
  const client = server.running;
  if (!client) {
    void vscode.window.showErrorMessage(
      'CodeGeeX: the codeglm server is not running yet; try again once it has started, or run "CodeGeeX: Restart Server".');
    return undefined;
  }
  const choice = translationChoice(
    readTranslationLanguages(client.initializeResult?.capabilities.experimental), document.languageId, target);
  if (!choice.ok) {
    log(choice.message);
    void vscode.window.showErrorMessage(choice.message);
    return undefined;
  }
  const language = target !== undefined ? choice.targets[0] : await pickTarget(choice.source, choice.targets);
  if (!language) return undefined;
  const sel = editor.selection;
  const args = translateArguments({
    uri: document.uri.toString(), target: language,
    selection: selectionOnly ? {
      start: { line: sel.start.line, character: sel.start.character },
      end: { line: sel.end.line, character: sel.end.character },
    } : undefined,
  });
  const name = path.basename(document.uri.path);
  const title = `CodeGeeX: translating ${selectionOnly ? `the selection in ${name}` : name} to ${language.displayName}`;
  log(`${title} (${JSON.stringify(args)})`);
  let result: TranslateResult;
  try {
    const raw = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title, cancellable: true },
      async (progress, token) => {
        const increments = progressIncrements();
        server.progressSink = (value) => progress.report(increments(value));
        try {
          return await client.sendRequest(ExecuteCommandRequest.type, {
            command: selectionOnly ? TRANSLATE_SELECTION : TRANSLATE_FILE, arguments: [args],
          }, token);
        } finally {
          server.progressSink = undefined;
        }
      },
    );
    result = parseTranslateResult(raw);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (/cancel/i.test(message)) {
      void vscode.window.showInformationMessage('CodeGeeX: translation cancelled.');
    } else {
      log(`translation failed: ${message}`);
      void vscode.window.showErrorMessage(`CodeGeeX: translation failed: ${message}`);
    }
    return undefined;
  }
  await openBeside(result, language);
  // the server shows its own warning (window/showMessage) naming the failed units; the log keeps it
  if (result.message) log(`translation: ${result.message}`);
  if (result.failedUnits.length) log(`translation: failed units: ${result.failedUnits.join('; ')}`);
  return result;
}

async function pickTarget(source: TargetLanguage, targets: TargetLanguage[]): Promise<TargetLanguage | undefined> {
  const picked = await vscode.window.showQuickPick(
    targets.map((l) => ({ label: l.displayName, description: l.id, language: l })),
    { placeHolder: `Translate ${source.displayName} to...`, title: 'CodeGeeX: target language' },
  );
  return picked?.language;
}

async function openBeside(result: TranslateResult, language: TargetLanguage): Promise<void> {
  let doc: vscode.TextDocument;
  if (result.uri) {
    doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(result.uri));
    // the server created the file and filled it through an edit: put that on disk
    if (doc.isDirty && doc.getText() === result.text) await doc.save();
  } else {
    doc = await vscode.workspace.openTextDocument({ language: vscodeLanguageId(language), content: result.text });
  }
  await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: false });
}

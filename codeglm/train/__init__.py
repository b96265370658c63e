"""Training a CodeGeeX-architecture model on source trees."""

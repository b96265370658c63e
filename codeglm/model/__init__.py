"""The CodeGeeX model as transformers classes: config, model, tokenizer, checkpoint conversion."""

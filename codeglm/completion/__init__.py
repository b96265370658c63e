"""Code completion: context, prompts, the pipeline, and post-processing of what the model wrote."""

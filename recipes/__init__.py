"""The bundled recipes: LightningCLI YAML files, shipped in the wheel as ``lightning_xai.recipes.configs``.

Run one by name or path: ``lightning-xai fit --config minilm_sentiment``; list them: ``lightning-xai recipes``.
"""

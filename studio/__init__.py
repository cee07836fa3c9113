"""HuMo Studio: the Gradio front end, its gallery store and presets."""

"""The networks, named as in the Hunyuan-DiT report and the official code: the DiT (`dit`, `attention`, `rope`,
`embedders`), its architecture read from the weights (`config`) and the releases (`versions`), the bilingual text
encoder and the SDXL VAE, and the one way each is built from its weights (`materialise`)."""

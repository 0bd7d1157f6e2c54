"""Pretrained encoders (torch / ONNX Runtime): multilingual-e5-small text, MobileNet-V2 images, their
offline preparation from packaged weights, and the embedding cache. No Beam here."""

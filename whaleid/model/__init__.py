"""Layer 3: the networks and how they are trained and run: backbone + GeM + neck, ArcFace heads, augmentation, the training loop, DDP, embedding, pretrained weights, export, the box detector."""

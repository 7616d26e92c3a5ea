"""Training losses: pixel, perceptual (VGG19), GAN."""

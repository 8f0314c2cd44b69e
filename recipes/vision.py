"""Self-supervised image representations: rotation, patch position, jigsaw, inpainting, autoencoders, VAE,
PixelCNN, SimCLR and MoCo on one engine.

    accelerate launch recipes/vision.py --config recipes/configs/vision/debug.yaml [key=value ...]
    nlp-ssl run vision --config recipes/configs/vision/rotation.yaml
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("vision")

if __name__ == "__main__":
    main()

"""The input normalisation that pre-trained weights expect: shared by the data pipeline (its defaults)
and the backbone configs (which record theirs), so neither imports the other. Each family keeps its
own further ones (CLIP's, the supervised ViT's: models/image_vit)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)     # VideoMAE, and the data pipeline's default
IMAGENET_STD = (0.229, 0.224, 0.225)

"""The built-in models, by `model=NAME`: each a factory (num_classes, input_shape, its own options); any other
nn.Module class or factory plugs in by `model._target_=pkg.module.name`."""

MODELS = {
    "cnn": "dst_cli.models.digits.build_cnn",
    "mlp": "dst_cli.models.digits.build_mlp",
    "vgg16": "dst_cli.models.vgg.build_vgg16",
    "vgg19": "dst_cli.models.vgg.build_vgg19",
    "resnet18": "dst_cli.models.resnet.build_resnet18",
    "resnet34": "dst_cli.models.resnet.build_resnet34",
    "resnet50": "dst_cli.models.resnet.build_resnet50",
    "resnet50_imagenet": "dst_cli.models.imagenet.build_resnet50_imagenet",
}

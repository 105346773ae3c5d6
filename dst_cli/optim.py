"""The optimizer presets (`optim=sgd | adamw`): torch optimizers with the arguments the DST papers train with.

Any torch.optim optimizer (or another class taking `params` first) plugs in by `optim._target_=...`; its
other arguments come from its signature. The learning rate's schedule is dst_cli.lr_schedules.
"""

# name -> (optimizer, the arguments it is configured with besides its signature's defaults)
OPTIMIZER_PRESETS = {
    # the CIFAR recipe of ITOP / GraNet / DST-EE (VITA-Group/GraNet CIFAR/main.py: SGD lr 0.1, momentum 0.9,
    # nesterov, weight decay 5e-4)
    "sgd": ("torch.optim.SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4}),
    "adamw": ("torch.optim.AdamW", {"lr": 1.0e-3, "weight_decay": 5.0e-4}),
}

"""The data layer: splits, deterministic batching (resume, ranks), augmentation, file formats, errors."""

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from dst_cli.data.digits import split_sizes, stratified_split
from dst_cli.data.sampling import BatchPlan, epoch_permutation
from dst_cli.data.transforms import CropFlip, ResizedCropFlip
from dst_cli.errors import UserError

from conftest import build_data, option_node
from fakes import fake_cifar_images, write_fake_cifar10, write_fake_cifar100, write_fake_image_folder

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def dataset_cfg(name: str, **overrides):
    """The dataset=<name> node with overrides, as dst-train hands it to its builder."""
    return option_node("dataset", name, **overrides)


def all_batches(loader, epoch: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.batches(epoch, start))


def assert_same_batches(first, second) -> None:
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def concat_labels(batches) -> torch.Tensor:
    return torch.cat([y for _, y in batches])


# ---------------------------------------------------------------- batch plan (pure index arithmetic)


def test_train_plan_drops_the_last_partial_batch_and_covers_each_sample_once():
    plan = BatchPlan(num_samples=70, batch_size=16, train=True, seed=3)
    batches = [indices for indices, _ in plan.batches(epoch=0)]
    assert len(plan) == 4 and len(batches) == 4
    seen = torch.cat(batches)
    assert len(seen) == 64 and len(set(seen.tolist())) == 64
    assert torch.equal(seen, epoch_permutation(70, seed=3, epoch=0)[:64])


def test_rank_shards_are_disjoint_and_together_form_the_single_rank_batches():
    single = [indices for indices, _ in BatchPlan(100, 20, train=True, seed=1).batches(epoch=2)]
    shards = [
        [indices for indices, _ in BatchPlan(100, 10, train=True, seed=1, rank=rank, world_size=2).batches(epoch=2)]
        for rank in range(2)
    ]
    assert len(single) == len(shards[0]) == len(shards[1]) == 5
    for batch, (rank0, rank1) in enumerate(zip(*shards)):
        assert not set(rank0.tolist()) & set(rank1.tolist())
        assert torch.equal(torch.cat([rank0, rank1]), single[batch])


def test_augmentation_params_of_a_sample_do_not_depend_on_the_number_of_ranks():
    draw = CropFlip(padding=4).draw
    single = torch.cat([params for _, params in BatchPlan(64, 16, train=True, seed=5).batches(1, draw_params=draw)])
    shards = [
        list(BatchPlan(64, 8, train=True, seed=5, rank=rank, world_size=2).batches(1, draw_params=draw))
        for rank in range(2)
    ]
    interleaved = torch.cat([torch.cat([p0, p1]) for (_, p0), (_, p1) in zip(*shards)])
    assert torch.equal(interleaved, single)


def test_eval_plan_keeps_stored_order_and_a_short_last_batch():
    plan = BatchPlan(num_samples=10, batch_size=4, train=False, seed=0, rank=1, world_size=2)
    batches = list(plan.batches(epoch=7))
    assert [indices.tolist() for indices, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(params is None for _, params in batches)
    assert len(plan) == 3


# ---------------------------------------------------------------- digits


def test_digits_split_sizes_are_fractions_of_the_whole_set():
    assert split_sizes(1797, val_fraction=0.1, test_fraction=0.2) == (1258, 180, 359)
    assert split_sizes(1797, val_fraction=0.0, test_fraction=0.2) == (1438, 0, 359)


def test_digits_split_is_disjoint_complete_and_stratified():
    labels = torch.arange(1797) % 10
    train, val, test = stratified_split(labels, val_size=180, test_size=359, split_seed=0)
    assert (len(train), len(val), len(test)) == (1258, 180, 359)
    all_indices = torch.cat([train, val, test])
    assert sorted(all_indices.tolist()) == list(range(1797))
    per_class_in_test = torch.bincount(labels[test], minlength=10)
    assert per_class_in_test.min() >= 35 and per_class_in_test.max() <= 37  # 0.2 * ~180 per class


def test_digits_split_does_not_depend_on_the_run_seed():
    first = build_data(dataset_cfg("digits"), batch_size=64, seed=0, device="cpu")
    second = build_data(dataset_cfg("digits"), batch_size=64, seed=99, device="cpu")
    assert_same_batches(all_batches(first.test), all_batches(second.test))
    assert_same_batches(all_batches(first.val), all_batches(second.val))


def test_digits_loaders_have_the_documented_sizes_shapes_and_normalisation():
    data = build_data(dataset_cfg("digits"), batch_size=64, seed=0, device="cpu")
    assert (data.num_classes, data.input_shape) == (10, (1, 8, 8))
    assert (len(data.train), len(data.val), len(data.test)) == (19, 3, 6)  # 1258 // 64, ceil(180/64), ceil(359/64)
    train = all_batches(data.train)
    assert [len(y) for _, y in train] == [64] * 19
    assert sum(len(y) for _, y in data.val.batches(0)) == 180
    assert sum(len(y) for _, y in data.test.batches(0)) == 359
    x, y = train[0]
    assert (x.shape, x.dtype, y.dtype) == ((64, 1, 8, 8), torch.float32, torch.int64)
    pixels = torch.cat([x for x, _ in train])
    assert abs(pixels.mean().item()) < 0.05 and abs(pixels.std().item() - 1) < 0.05


def test_digits_without_validation_split():
    data = build_data(dataset_cfg("digits", val_fraction=0.0), batch_size=64, seed=0, device="cpu")
    assert data.val is None and len(data.train) == 1438 // 64


def test_same_seed_and_epoch_give_the_same_batches():
    first = build_data(dataset_cfg("digits"), batch_size=32, seed=4, device="cpu")
    second = build_data(dataset_cfg("digits"), batch_size=32, seed=4, device="cpu")
    assert_same_batches(all_batches(first.train, epoch=3), all_batches(second.train, epoch=3))


def test_resuming_at_batch_b_yields_the_tail_of_a_full_pass():
    data = build_data(dataset_cfg("digits"), batch_size=32, seed=4, device="cpu")
    full = all_batches(data.train, epoch=2)
    assert_same_batches(all_batches(data.train, epoch=2, start=17), full[17:])
    assert all_batches(data.train, epoch=2, start=len(data.train)) == []


def test_epochs_and_seeds_shuffle_differently():
    data = build_data(dataset_cfg("digits"), batch_size=32, seed=4, device="cpu")
    other_seed = build_data(dataset_cfg("digits"), batch_size=32, seed=5, device="cpu")
    epoch0 = concat_labels(all_batches(data.train, epoch=0))
    assert not torch.equal(epoch0, concat_labels(all_batches(data.train, epoch=1)))
    assert not torch.equal(epoch0, concat_labels(all_batches(other_seed.train, epoch=0)))


def test_two_ranks_split_each_global_batch_of_digits():
    single = build_data(dataset_cfg("digits"), batch_size=64, seed=1, device="cpu")
    ranks = [
        build_data(dataset_cfg("digits"), batch_size=32, seed=1, device="cpu", rank=rank, world_size=2)
        for rank in (0, 1)
    ]
    assert len(ranks[0].train) == len(ranks[1].train) == len(single.train) == 19
    for (x, y), (x0, y0), (x1, y1) in zip(*(all_batches(d.train, epoch=1) for d in [single, *ranks])):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_eval_batch_size_applies_to_val_and_test_only():
    data = build_data(dataset_cfg("digits"), batch_size=64, seed=0, device="cpu", eval_batch_size=500)
    assert (len(data.train), len(data.val), len(data.test)) == (19, 1, 1)


def test_iterating_never_touches_the_global_torch_rng():
    state = torch.get_rng_state()
    data = build_data(dataset_cfg("digits"), batch_size=64, seed=0, device="cpu")
    all_batches(data.train)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "overrides, batch_size, message",
    [
        ({"test_fraction": 0.0}, 64, "test_fraction=0.0"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, 64, "val_fraction=0.5"),
        ({}, 5000, "batch_size 5000"),
    ],
)
def test_bad_digits_settings_are_user_errors(overrides, batch_size, message):
    with pytest.raises(UserError, match=message):
        build_data(dataset_cfg("digits", **overrides), batch_size=batch_size, seed=0, device="cpu")


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_sizes():
    cfg = dataset_cfg("synthetic", shape=[3, 16, 12], num_classes=4, train_size=100, val_size=20, test_size=30)
    data = build_data(cfg, batch_size=16, seed=0, device="cpu")
    assert (data.num_classes, data.input_shape) == (4, (3, 16, 12))
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    x, y = next(data.train.batches(0))
    assert (x.shape, x.dtype, y.dtype) == ((16, 3, 16, 12), torch.float32, torch.int64)
    assert concat_labels(all_batches(data.test)).tolist() == [i % 4 for i in range(30)]


def test_synthetic_defaults_have_no_validation_set():
    data = build_data(dataset_cfg("synthetic"), batch_size=64, seed=0, device="cpu")
    assert data.val is None and (len(data.train), len(data.test)) == (16, 4)


def test_synthetic_test_set_does_not_change_with_the_train_size_or_run_seed():
    small = build_data(dataset_cfg("synthetic", train_size=128), batch_size=32, seed=0, device="cpu")
    large = build_data(dataset_cfg("synthetic", train_size=512), batch_size=32, seed=7, device="cpu")
    # the normalisation comes from each train set, so compare the un-normalised order and labels
    assert torch.equal(concat_labels(all_batches(small.test)), concat_labels(all_batches(large.test)))
    x_small, x_large = next(small.test.batches(0))[0], next(large.test.batches(0))[0]
    assert torch.corrcoef(torch.stack([x_small.flatten(), x_large.flatten()]))[0, 1] > 0.99


def test_synthetic_is_learnable_by_nearest_class_mean():
    data = build_data(dataset_cfg("synthetic"), batch_size=64, seed=0, device="cpu")
    train = all_batches(data.train)
    x, y = torch.cat([b[0] for b in train]).flatten(1), concat_labels(train)
    class_means = torch.stack([x[y == c].mean(0) for c in range(10)])
    test = all_batches(data.test)
    x_test, y_test = torch.cat([b[0] for b in test]).flatten(1), concat_labels(test)
    accuracy = (torch.cdist(x_test, class_means).argmin(1) == y_test).float().mean().item()
    assert accuracy > 0.95


# ---------------------------------------------------------------- CIFAR from fake files in the real format


def cifar_cfg(name: str, root: Path, **overrides):
    return dataset_cfg(name, **{"root": str(root), "download": False, "num_workers": 0, **overrides})


@pytest.mark.parametrize("pipeline", ["device", "workers"])
@pytest.mark.parametrize(
    "name, write_fake, num_classes", [("cifar10", write_fake_cifar10, 10), ("cifar100", write_fake_cifar100, 100)]
)
def test_cifar_loads_fake_files_through_build_data(tmp_path, name, write_fake, num_classes, pipeline):
    write_fake(tmp_path)
    data = build_data(cifar_cfg(name, tmp_path, pipeline=pipeline), batch_size=8, seed=0, device="cpu")
    assert (data.num_classes, data.input_shape, data.val) == (num_classes, (3, 32, 32), None)
    assert (len(data.train), len(data.test)) == (5, 2)
    train = all_batches(data.train)
    x, y = train[0]
    assert (x.shape, x.dtype, y.dtype) == ((8, 3, 32, 32), torch.float32, torch.int64)
    assert len(set(torch.cat([x.flatten(1) for x, _ in train]).sum(1).tolist())) == 40  # 40 distinct images
    test_x, test_y = map(torch.cat, zip(*all_batches(data.test)))
    expected_labels = list(range(10)) if name == "cifar10" else [(7 * j) % 100 for j in range(10)]
    assert test_y.tolist() == expected_labels


def test_cifar_test_images_are_the_file_pixels_normalised_in_order(tmp_path):
    write_fake_cifar10(tmp_path)
    data = build_data(cifar_cfg("cifar10", tmp_path), batch_size=8, seed=0, device="cpu")
    test_x = torch.cat([x for x, _ in data.test.batches(0)])
    pixels = fake_cifar_images(10, 0).reshape(10, 3, 32, 32)
    image, channel, row, column = 3, 2, 5, 30
    expected = (pixels[image, channel, row, column] / 255 - CIFAR10_MEAN[channel]) / CIFAR10_STD[channel]
    assert test_x[image, channel, row, column].item() == pytest.approx(expected, abs=1e-5)


def test_device_and_worker_pipelines_give_identical_batches(tmp_path):
    write_fake_cifar10(tmp_path)
    device = build_data(cifar_cfg("cifar10", tmp_path, pipeline="device"), batch_size=8, seed=3, device="cpu")
    workers = build_data(cifar_cfg("cifar10", tmp_path, pipeline="workers"), batch_size=8, seed=3, device="cpu")
    for loader_name in ("train", "test"):
        device_batches = all_batches(getattr(device, loader_name), epoch=2)
        worker_batches = all_batches(getattr(workers, loader_name), epoch=2)
        assert len(device_batches) == len(worker_batches)
        for (x_device, y_device), (x_workers, y_workers) in zip(device_batches, worker_batches):
            assert torch.equal(y_device, y_workers)
            torch.testing.assert_close(x_device, x_workers, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_tensor_pipeline_never_makes_the_host_wait_for_the_gpu(tmp_path):
    """Batches are gathered, augmented and normalised without a host-device synchronisation (found on an H200:
    four per training batch before). The first batch makes the per-device constants, so it is left out."""
    write_fake_cifar10(tmp_path, per_file=64)
    data = build_data(cifar_cfg("cifar10", tmp_path, pipeline="device"), batch_size=8, seed=0, device="cuda")
    batches = data.train.batches(epoch=1)
    next(batches)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches:
            pass
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda" and x.shape == (8, 3, 32, 32)


@pytest.mark.parametrize("pipeline", ["device", "workers"])
def test_cifar_resume_and_ranks_are_exact(tmp_path, pipeline):
    write_fake_cifar10(tmp_path)
    cfg = cifar_cfg("cifar10", tmp_path, pipeline=pipeline)
    data = build_data(cfg, batch_size=8, seed=2, device="cpu")
    full = all_batches(data.train, epoch=1)
    assert_same_batches(all_batches(data.train, epoch=1, start=3), full[3:])
    assert_same_batches(all_batches(data.train, epoch=1), full)
    ranks = [build_data(cfg, batch_size=4, seed=2, device="cpu", rank=r, world_size=2) for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(full, *(all_batches(d.train, epoch=1) for d in ranks)):
        assert torch.equal(torch.cat([y0, y1]), y)
        torch.testing.assert_close(torch.cat([x0, x1]), x, rtol=0, atol=1e-6)


def test_cifar_worker_processes_resume_exactly(tmp_path):
    write_fake_cifar10(tmp_path)
    cfg = cifar_cfg("cifar10", tmp_path, pipeline="workers", num_workers=2)
    reference = build_data(cifar_cfg("cifar10", tmp_path, pipeline="device"), batch_size=8, seed=2, device="cpu")
    data = build_data(cfg, batch_size=8, seed=2, device="cpu")
    expected = all_batches(reference.train, epoch=4)
    abandoned = data.train.batches(epoch=0)
    next(abandoned)  # a pass left half-way must not leak batches into the next one
    for (x, y), (x_ref, y_ref) in zip(all_batches(data.train, epoch=4, start=2), expected[2:], strict=True):
        assert torch.equal(y, y_ref)
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-6)


def test_cifar_train_batches_are_augmented_with_the_drawn_crops_and_flips(tmp_path):
    write_fake_cifar10(tmp_path)
    data = build_data(cifar_cfg("cifar10", tmp_path), batch_size=8, seed=0, device="cpu")
    x, _ = next(data.train.batches(epoch=0))
    indices, params = next(BatchPlan(40, 8, train=True, seed=0).batches(0, draw_params=CropFlip(4).draw))
    stored = data.train.images[indices]
    assert torch.equal(x, data.train.normalize(CropFlip(4).apply_batch(stored, params)))
    assert not torch.equal(x, data.train.normalize(stored))


def test_cifar_held_out_validation_split(tmp_path):
    write_fake_cifar10(tmp_path)
    data = build_data(cifar_cfg("cifar10", tmp_path, val_size=8), batch_size=8, seed=0, device="cpu")
    assert (len(data.train), len(data.val)) == (4, 1)
    val_x = torch.cat([x for x, _ in data.val.batches(0)])
    val_images = {tuple(image.flatten().tolist()) for image in data.val.images}
    train_images = {tuple(image.flatten().tolist()) for image in data.train.images}
    assert len(val_images) == 8 and len(train_images) == 32 and not val_images & train_images
    assert val_x.shape == (8, 3, 32, 32)


def test_cifar_root_defaults_to_the_dst_data_dir_variable(tmp_path, monkeypatch):
    write_fake_cifar100(tmp_path)
    monkeypatch.setenv("DST_DATA_DIR", str(tmp_path))
    data = build_data(dataset_cfg("cifar100", download=False), batch_size=8, seed=0, device="cpu")
    assert len(data.train) == 5


def test_cifar_pipelines_leave_the_global_rng_alone(tmp_path):
    write_fake_cifar10(tmp_path)
    state = torch.get_rng_state()
    for pipeline in ("device", "workers"):
        data = build_data(cifar_cfg("cifar10", tmp_path, pipeline=pipeline), batch_size=8, seed=0, device="cpu")
        all_batches(data.train)
        all_batches(data.test)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- augmentation ops


def test_crop_flip_on_a_hand_computed_image():
    image = torch.arange(1, 7, dtype=torch.uint8).view(1, 1, 2, 3)  # [[1, 2, 3], [4, 5, 6]]
    crop_flip = CropFlip(padding=1)
    params = torch.tensor([[0, 0, 0], [1, 1, 0], [2, 2, 0], [1, 1, 1], [0, 2, 1]])
    out = crop_flip.apply_batch(image.expand(5, 1, 2, 3), params)[:, 0].tolist()
    assert out[0] == [[0, 0, 0], [0, 1, 2]]  # shifted down-right, zeros come in
    assert out[1] == [[1, 2, 3], [4, 5, 6]]  # centre crop = original
    assert out[2] == [[5, 6, 0], [0, 0, 0]]
    assert out[3] == [[3, 2, 1], [6, 5, 4]]  # flip only
    assert out[4] == [[0, 0, 0], [0, 3, 2]]


def test_crop_flip_on_pil_images_matches_the_batch_version():
    crop_flip = CropFlip(padding=4)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = crop_flip.draw(16, torch.Generator().manual_seed(1))
    batch = crop_flip.apply_batch(images, params)
    for image, row, expected in zip(images, params.tolist(), batch):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        out = torch.from_numpy(np.array(crop_flip.apply_image(pil, row))).permute(2, 0, 1)
        assert torch.equal(out, expected)


def test_crop_flip_draws_every_offset_and_both_flips():
    params = CropFlip(padding=4).draw(2000, torch.Generator().manual_seed(0))
    assert params.dtype == torch.int64 and params.shape == (2000, 3)
    assert set(params[:, 0].tolist()) == set(range(9)) == set(params[:, 1].tolist())
    assert set(params[:, 2].tolist()) == {0, 1}


def test_resized_crop_boxes_fit_the_image_and_fall_back_to_a_central_crop():
    crop = ResizedCropFlip(size=8)
    generator = torch.Generator().manual_seed(0)
    boxes = [crop.crop_box(100, 50, generator) for _ in range(200)]
    assert all(top >= 0 and left >= 0 and top + h <= 50 and left + w <= 100 for top, left, h, w in boxes)
    assert len(set(boxes)) > 150
    impossible_area = ResizedCropFlip(size=8, scale=(2.0, 3.0))
    assert impossible_area.crop_box(100, 50, generator) == (0, 16, 50, 67)  # width 50 * 4/3, centred


# ---------------------------------------------------------------- ImageNet-style folder


def test_image_folder_through_build_data(tmp_path):
    write_fake_image_folder(tmp_path)
    data = build_data(dataset_cfg("imagenet", root=str(tmp_path), num_workers=0), batch_size=2, seed=0, device="cpu")
    assert (data.num_classes, data.input_shape, data.val) == (2, (3, 224, 224), None)
    assert (len(data.train), len(data.test)) == (3, 2)
    train = all_batches(data.train, epoch=1)
    x, y = train[0]
    assert (x.shape, x.dtype, y.dtype) == ((2, 3, 224, 224), torch.float32, torch.int64)
    assert sorted(concat_labels(train).tolist()) == [0, 0, 0, 1, 1, 1]
    assert_same_batches(all_batches(data.train, epoch=1, start=1), train[1:])
    assert concat_labels(all_batches(data.test)).tolist() == [0, 0, 1, 1]
    assert_same_batches(all_batches(data.test), all_batches(data.test))


def test_image_folder_random_crops_are_reproducible(tmp_path):
    write_fake_image_folder(tmp_path)
    cfg = dataset_cfg("imagenet", root=str(tmp_path), num_workers=0, crop_size=16, resize_size=18)
    first = build_data(cfg, batch_size=3, seed=0, device="cpu")
    second = build_data(cfg, batch_size=3, seed=0, device="cpu")
    assert first.input_shape == (3, 16, 16)
    assert_same_batches(all_batches(first.train, epoch=5), all_batches(second.train, epoch=5))


# ---------------------------------------------------------------- missing or bad data


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_cifar_files_without_download(tmp_path):
    with pytest.raises(UserError) as error:
        build_data(cifar_cfg("cifar10", tmp_path), batch_size=8, seed=0, device="cpu")
    message = assert_one_line(error)
    assert str(tmp_path / "cifar-10-batches-py") in message and "dataset.root=" in message
    assert "DST_DATA_DIR" in message and "dataset.download=true" in message


def test_failed_download_becomes_a_user_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", no_network)
    with pytest.raises(UserError) as error:
        build_data(cifar_cfg("cifar100", tmp_path, download=True), batch_size=8, seed=0, device="cpu")
    message = assert_one_line(error)
    assert "cifar100" in message and str(tmp_path) in message and "download failed (URLError" in message


def test_malformed_cifar_file(tmp_path):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError) as error:
        build_data(cifar_cfg("cifar10", tmp_path), batch_size=8, seed=0, device="cpu")
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in assert_one_line(error)


def test_imagenet_root_must_be_given():
    with pytest.raises(UserError, match=r"dataset\.root"):
        build_data(dataset_cfg("imagenet"), batch_size=2, seed=0, device="cpu")


def test_empty_image_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError) as error:
        build_data(dataset_cfg("imagenet", root=str(tmp_path)), batch_size=2, seed=0, device="cpu")
    message = assert_one_line(error)
    assert str(tmp_path / "train") in message and "dataset.root=" in message


def test_an_unknown_target_is_named():
    with pytest.raises(UserError, match="dataset._target_=dst_cli.data.mnist.build_mnist cannot be imported"):
        build_data({"_target_": "dst_cli.data.mnist.build_mnist"}, batch_size=8, seed=0, device="cpu")


# ---------------------------------------------------------------- your own datasets (dst_cli.data.user)


def user_cfg(**arguments):
    return {"_target_": "plugins.data.make_data", **arguments}  # tests/ is on the path: tests/plugins/data.py


def test_user_datasets_get_the_inferred_shape_classes_and_all_splits():
    data = build_data(user_cfg(size=100, features=5, classes=4), batch_size=16, seed=0, device="cpu")
    assert (data.num_classes, data.input_shape) == (4, (5,))
    assert (len(data.train), len(data.val), len(data.test)) == (100 // 16, 2, 2)  # 25 val / test samples
    x, y = next(data.train.batches(0))
    assert (x.shape, x.dtype, y.dtype) == ((16, 5), torch.float32, torch.int64)
    assert concat_labels(all_batches(data.test)).tolist() == [i % 4 for i in range(25)]


def test_user_loader_is_deterministic_resumable_and_shards_over_ranks():
    data = build_data(user_cfg(size=96), batch_size=16, seed=3, device="cpu")
    again = build_data(user_cfg(size=96), batch_size=16, seed=3, device="cpu")
    full = all_batches(data.train, epoch=2)
    assert_same_batches(full, all_batches(again.train, epoch=2))
    assert_same_batches(all_batches(data.train, epoch=2, start=4), full[4:])
    assert not torch.equal(concat_labels(full), concat_labels(all_batches(data.train, epoch=3)))
    ranks = [build_data(user_cfg(size=96), batch_size=8, seed=3, device="cpu", rank=r, world_size=2) for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(full, *(all_batches(d.train, epoch=2) for d in ranks)):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_user_callable_may_return_a_dict_with_the_class_count():
    from torch.utils.data import TensorDataset

    split = TensorDataset(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long))
    from dst_cli.data.base import LoaderSettings
    from dst_cli.data.user import wrap_datasets

    data = wrap_datasets({"train": split, "test": split, "num_classes": 7}, LoaderSettings(4, 4, 0, torch.device("cpu")))
    assert (data.num_classes, data.input_shape, data.val) == (7, (2,), None)


@pytest.mark.parametrize("made, problem", [(42, "got int"), ((1, 2, 3, 4), "got tuple"), ({"train": [1]}, "test set")])
def test_a_user_callable_returning_something_else_is_named(made, problem):
    from dst_cli.data.base import LoaderSettings
    from dst_cli.data.user import wrap_datasets

    with pytest.raises(UserError, match=problem) as error:
        wrap_datasets(made, LoaderSettings(4, 4, 0, torch.device("cpu")))
    assert "dataset._target_ must return (train, test)" in str(error.value)


def test_unknown_pipeline(tmp_path):
    write_fake_cifar10(tmp_path)
    with pytest.raises(UserError, match="dataset.pipeline='gpu' is not supported; allowed: auto, device, workers"):
        build_data(cifar_cfg("cifar10", tmp_path, pipeline="gpu"), batch_size=8, seed=0, device="cpu")

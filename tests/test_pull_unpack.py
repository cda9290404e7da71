"""The pull pipeline with its unpack stage: every schedule and order builds the same root
filesystem as unpacking the stored image, the stage probes are filled in, streaming really
overlaps the download, and failures (a corrupt blob, a hostile layer) leave no root behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_unpack import GZ, TAR, ZST, E, make_tar, tree, write_layout

from pullbench import ImageLayout, pull, push_image
from pullbench._errors import BenchmarkError, DigestMismatch, StrategyError, UnsafeLayerError
from pullbench.puller._stages import UnpackPlan
from pullbench.puller._unpack import unpack_image
from pullbench.servers import EmbeddedRegistry, Misbehavior

MiB = 1 << 20


def _text(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    words = np.array([b"layer", b"digest", b"def", b"return", b"self", b"manifest", b"\n"])
    return b" ".join(words[rng.integers(0, len(words), n // 5)])[:n]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 3-layer image (gzip text + files, zstd whiteouts, plain tar of many small files) in
    a layout, with the root filesystem unpacking it directly gives."""
    base = tmp_path_factory.mktemp("pull-unpack")
    layers = [
        (GZ, make_tar(E("usr/share/big.txt", "f", _text(6 * MiB, 1)),
                      E("usr/lib/random.so", "f", np.random.default_rng(3).bytes(4 * MiB)),
                      E("usr/share/doc", "d"), E("etc/gone", "f", b"x"),
                      E("bin", "s", link="usr/bin"), E("usr/bin/tool", "f", b"t", mode=0o755),
                      E("opt/old/a", "f", b"a"))),
        (ZST, make_tar(E("etc/.wh.gone", "f"), E("opt/old/.wh..wh..opq", "f"),
                       E("opt/old/b", "f", _text(2 * MiB, 2)), E("usr/bin/link", "h",
                                                                     link="usr/bin/tool"))),
        (TAR, make_tar(*[E(f"srv/many/f{i:04d}", "f", b"%d" % i) for i in range(400)])),
    ]
    layout = write_layout(base / "layout", layers)
    reference = tree(Path(unpack_image(layout, base / "reference", privileged=False).root))
    return ImageLayout(layout), reference


@pytest.fixture(scope="module")
def registry(tmp_path_factory, image):
    with EmbeddedRegistry(tmp_path_factory.mktemp("registry")) as reg:
        push_image(image[0], f"{reg.host}/unpack/img:v1")
        yield reg


PLANS = [
    UnpackPlan(privileged=False),
    UnpackPlan(schedule="stream", privileged=False),
    UnpackPlan(schedule="end", privileged=False),
    UnpackPlan(order="serial", privileged=False),
    UnpackPlan(order="serial", schedule="stream", decompressor="isal", privileged=False),
    UnpackPlan(schedule="stream", decompressor="unpigz", privileged=False),
    UnpackPlan(decompressor="zlib-ng", decompress_concurrency=2, privileged=False),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p.label for p in PLANS])
@pytest.mark.parametrize("strategy", ["go-iocopy", "containerd-1m"])
def test_every_plan_builds_the_same_root_filesystem(registry, image, tmp_path, plan, strategy):
    result = pull(f"{registry.host}/unpack/img:v1", strategy, tmp_path / "store",
                  plain_http=True, unpack=plan, concurrency=2)
    assert result.rootfs == str(tmp_path / "store" / "rootfs")
    assert tree(Path(result.rootfs)) == image[1]
    assert (result.decompressor, result.unpack_schedule, result.unpack_order) == (
        plan.decompressor, plan.schedule, plan.order)
    assert result.files == 5 + 1 + 400  # big, random, gone, tool, a; b; many
    assert result.uncompressed_bytes > result.total_bytes  # text compresses
    assert 0 < result.transfer_s <= result.duration_s
    assert result.unpack_wall_s > 0
    assert result.unpack_s > 0
    assert result.decompress_s > 0
    layers = result.layers[1:]
    assert [x.files for x in layers] == [5, 1, 400]
    assert all(x.uncompressed_bytes for x in layers)
    row = result.to_row()
    for column in ("decompressor", "unpack_schedule", "decompress_s", "decompress_cpu_s",
                   "unpack_s", "unpack_cpu_s", "unpack_tail_s", "uncompressed_bytes", "files",
                   "dirs_created", "fsyncs"):
        assert row[column] is not None, column


def test_without_a_plan_nothing_is_unpacked(registry, tmp_path):
    result = pull(f"{registry.host}/unpack/img:v1", "go-iocopy", tmp_path / "store",
                  plain_http=True)
    assert result.rootfs is None
    assert result.files is None
    assert not (tmp_path / "store" / "rootfs").exists()


def test_streaming_decompresses_while_the_layer_downloads(registry, image, tmp_path):
    from pullbench.servers import ShapingProxy

    with ShapingProxy(registry.host, "wan-200m") as proxy:  # ~25 MB/s: downloads take a while
        result = pull(f"{proxy.address}/unpack/img:v1", "go-iocopy", tmp_path / "store",
                      plain_http=True, unpack=UnpackPlan(schedule="stream", order="serial",
                                                         privileged=False))
    assert tree(Path(result.rootfs)) == image[1]
    # serial + stream: each layer's download starts when the previous one is applied, so the
    # applier is waiting when its bytes arrive (go-iocopy writes every 32 KiB read at once).
    # The base layer (~5 MB, ~0.2 s at 25 MB/s) is always fed from its download; a small one
    # may finish before a loaded machine schedules the applier.
    assert result.layers[1].streamed
    assert 1 <= result.layers_streamed <= 3
    # the stage overlapped the transfer: little is left after the last blob arrived
    assert result.unpack_tail_s < result.unpack_wall_s


def test_a_corrupt_blob_while_streaming_removes_the_root(tmp_path, image):
    with EmbeddedRegistry(tmp_path / "reg") as reg:
        push_image(image[0], f"{reg.host}/unpack/img:v1")
        reg.misbehavior = Misbehavior(corrupt_blobs=True)
        with pytest.raises(DigestMismatch):
            pull(f"{reg.host}/unpack/img:v1", "go-iocopy", tmp_path / "store", plain_http=True,
                 unpack=UnpackPlan(schedule="stream", privileged=False))
    assert not (tmp_path / "store" / "rootfs").exists()


def test_a_hostile_layer_in_a_pull_is_refused_and_the_root_removed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    layout = write_layout(tmp_path / "layout", [
        (GZ, make_tar(E("ok", "f", b"fine"))),
        (GZ, make_tar(E("esc", "s", link=str(outside)), E("esc/planted", "f", b"evil"))),
    ])
    with EmbeddedRegistry(tmp_path / "reg") as reg:
        push_image(ImageLayout(layout), f"{reg.host}/unpack/hostile:v1")
        for schedule in ("after", "stream"):
            dest = tmp_path / f"store-{schedule}"
            with pytest.raises(UnsafeLayerError, match="member 'esc/planted' goes through a "
                               "symlink"):
                pull(f"{reg.host}/unpack/hostile:v1", "go-iocopy", dest, plain_http=True,
                     unpack=UnpackPlan(schedule=schedule, privileged=False))
            assert not (dest / "rootfs").exists()
    assert list(outside.iterdir()) == []


def test_plan_tokens_and_validation():
    plan = UnpackPlan.from_tokens(["isal", "stream", "serial", "dc3"])
    assert (plan.decompressor, plan.schedule, plan.order, plan.decompress_concurrency) == (
        "isal", "stream", "serial", 3)
    assert plan.label == "isal+stream+serial+dc3"
    assert UnpackPlan.from_tokens(["after"]).label == "zlib+after"
    with pytest.raises(StrategyError, match=r"unpack token 'gunzip' is not a decompressor"):
        UnpackPlan.from_tokens(["gunzip"])
    with pytest.raises(StrategyError, match="schedule"):
        UnpackPlan(schedule="later")
    with pytest.raises(StrategyError, match="decompress_concurrency"):
        UnpackPlan(decompress_concurrency=0)


def test_arms_combine_a_copy_strategy_with_an_unpack_plan(tmp_path):
    from pullbench.experiment._results import load_results
    from pullbench.experiment._runner import run_experiment
    from pullbench.experiment._spec import ExperimentSpec

    spec = ExperimentSpec(name="t-unpack", isolation="inprocess", images=("synthetic-small",),
                          arms=("go-iocopy+zlib+after", "containerd-1m+isal+stream"),
                          blocks=1, warmup_blocks=0, seed=3)
    assert [a.unpack for a in spec.arms] == [("zlib", "after"), ("isal", "stream")]
    assert ExperimentSpec.from_mapping(spec.to_dict()).arms == spec.arms
    result = run_experiment(spec, tmp_path / "res", progress=False)
    assert result.ok_runs == 2
    df = load_results(tmp_path / "res").set_index("arm")
    assert df.loc["go-iocopy+zlib+after", "decompressor"] == "zlib"
    assert df.loc["containerd-1m+isal+stream", "unpack_schedule"] == "stream"
    assert (df["uncompressed_bytes"] > 3_000_000).all()
    assert (df["decompress_s"] > 0).all()
    assert (df["files"] > 0).all()
    with pytest.raises(BenchmarkError, match="unpack token 'gunzip'"):
        ExperimentSpec(name="bad", arms=("go-iocopy+gunzip",))


def test_small_files_images_and_zstd_reencodings_unpack_to_the_same_tree(tmp_path):
    from pullbench import SyntheticImageSpec, build_image, recompress_image
    from pullbench.puller._unpack import image_layers

    spec = SyntheticImageSpec((300 * 1024,), compressibility="text", seed=9, file_bytes=512)
    gz = build_image(spec, cache_dir=tmp_path / "cache")
    zst = recompress_image(gz, tmp_path / "zstd")
    (gz_layer,), (zst_layer,) = image_layers(gz.path), image_layers(zst.path)
    assert gz_layer[0].endswith("+gzip")
    assert zst_layer[0].endswith("+zstd")
    assert gz_layer[3] == zst_layer[3]  # same tar, same diff_id
    a = unpack_image(gz.path, tmp_path / "a", privileged=False)
    b = unpack_image(zst.path, tmp_path / "b", privileged=False, decompressor="isal")
    assert a.files == b.files == 600  # 300 KiB in 512-byte files
    assert len(list((tmp_path / "a" / "layer0").iterdir())) == 3  # 256 files to a directory
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_analysis_gives_a_verdict_per_stage_when_arms_unpack(tmp_path):
    from pullbench.experiment._analysis import analyze_folder
    from pullbench.experiment._runner import run_experiment
    from pullbench.experiment._spec import ExperimentSpec

    spec = ExperimentSpec(name="t-stages", isolation="inprocess", images=("synthetic-small",),
                          arms=("go-iocopy+zlib+after", "go-iocopy+isal+after"),
                          blocks=3, warmup_blocks=0, seed=4)
    run_experiment(spec, tmp_path / "res", progress=False)
    analysis = analyze_folder(tmp_path / "res")
    image = analysis.images["synthetic-small"]
    for metric in ("duration_s", "resolve_s", "transfer_s", "hash_s", "write_s",
                   "decompress_s", "unpack_s", "unpack_tail_s"):
        assert metric in image.metrics, (metric, image.skipped_metrics)
        assert image.metrics[metric].table, metric


def test_stage_breakdown_and_what_if_bounds(tmp_path):
    import pandas as pd

    from pullbench import stage_breakdown, what_if_free
    from pullbench._errors import StatsInputError

    rows = pd.DataFrame({
        "image": ["i"] * 4, "arm": ["a", "a", "b", "b"], "status": ["ok"] * 4,
        "warmup": [False] * 4,
        "duration_s": [10.0, 12.0, 6.0, 6.0], "resolve_s": [1.0, 1.0, 1.0, 1.0],
        "transfer_s": [3.0, 3.0, 3.0, 3.0], "unpack_tail_s": [5.0, 7.0, 1.5, 1.5],
        "decompress_s": [5.0, 7.0, 1.0, 1.0], "diff_hash_s": [0.5, 0.5, 0.5, 0.5],
        "unpack_s": [2.5, 2.5, 2.5, 2.5], "decompress_cpu_s": [4.0, 6.0, 1.0, 1.0],
        "unpack_cpu_s": [2.0, 2.0, 2.0, 2.0], "cpu_user_s": [1.0] * 4, "cpu_sys_s": [0.5] * 4,
    })
    b = stage_breakdown(rows).set_index("arm")
    assert b.loc["a", "duration_s"] == 11.0
    assert b.loc["a", "other_s"] == 1.0  # 11 - 1 - 3 - 6 (medians of each run's rest)
    assert b.loc["a", "transfer_cpu_s"] == 1.5
    assert b.loc["a", "runs"] == 2
    w = what_if_free(rows).set_index("arm")
    # a: apply = decompress + hash + unpack = 9 (median) > transfer 3: model = 1 + 9 = 10
    assert w.loc["a", "model_s"] == 10.0
    assert w.loc["a", "if_free_decompress_s"] == 1 + 3.0  # max(3, 9 - 6) = 3
    assert w.loc["a", "if_free_transfer_s"] == 10.0  # the transfer is not the bottleneck
    assert w.loc["a", "gain_decompress"] == pytest.approx(0.6)
    # b: apply = 4 > transfer 3; without decompression the transfer bounds it
    assert w.loc["b", "if_free_decompress_s"] == 4.0
    with pytest.raises(StatsInputError, match="unpack-stage columns"):
        stage_breakdown(rows.drop(columns=["decompress_s"]))
    # rows made before the hash and write stages were timed: NaN there, the rest unchanged
    assert b[["hash_s", "write_s", "receive_s"]].isna().all().all()
    assert w["gain_hash"].isna().all()
    assert w.loc["a", "if_free_decompress_s"] == 4.0


def test_hash_and_write_stages_in_the_breakdown_and_the_what_if_bounds():
    import pandas as pd

    from pullbench import stage_breakdown, what_if_free

    rows = pd.DataFrame({
        "image": ["i"] * 2, "arm": ["a", "b"], "status": ["ok"] * 2,
        "duration_s": [10.0, 10.0], "resolve_s": [1.0, 1.0], "transfer_s": [8.0, 3.0],
        "hash_s": [3.0, 1.0], "write_s": [1.0, 0.5], "unpack_tail_s": [1.0, 6.0],
        "decompress_s": [1.0, 4.0], "diff_hash_s": [0.5, 0.5], "unpack_s": [1.5, 1.5],
        "decompress_cpu_s": [1.0, 4.0], "unpack_cpu_s": [1.0, 1.0],
    })
    b = stage_breakdown(rows).set_index("arm")
    assert (b.loc["a", "hash_s"], b.loc["a", "write_s"], b.loc["a", "receive_s"]) == (3, 1, 4)
    w = what_if_free(rows).set_index("arm")
    # a: transfer 8 > apply 3 is the bottleneck; hashing for free leaves 8 - 3 = 5
    assert w.loc["a", "model_s"] == 9.0
    assert w.loc["a", "if_free_hash_s"] == 6.0
    assert w.loc["a", "if_free_write_s"] == 8.0
    assert w.loc["a", "gain_hash"] == pytest.approx(1 / 3)
    # b: apply 6 > transfer 3: nothing inside the transfer is on the critical path
    assert w.loc["b", "if_free_hash_s"] == w.loc["b", "model_s"] == 7.0
    assert w.loc["b", "gain_write"] == 0.0
    # one layer applied after its download (or anything with schedule "end"): no overlap, the
    # stages add up; streaming, or several layers applied as they arrive, overlap
    rows["unpack_schedule"], rows["unpack_order"] = ["after", "end"], ["in-order", "in-order"]
    rows["layer_count"] = [2, 4]
    w = what_if_free(rows).set_index("arm")
    assert w.loc["a", "model_s"] == 1 + 8 + 3
    assert w.loc["a", "if_free_hash_s"] == 1 + 5 + 3
    assert w.loc["a", "if_free_unpack_s"] == 1 + 8 + 1.5
    assert w.loc["b", "model_s"] == 1 + 3 + 6
    assert w.loc["b", "gain_write"] == pytest.approx(0.05)
    for schedule, layers in (("stream", 2), ("after", 4)):
        rows["unpack_schedule"], rows["layer_count"] = schedule, layers
        assert what_if_free(rows).set_index("arm").loc["a", "model_s"] == 9.0
    rows["unpack_schedule"], rows["unpack_order"] = "after", "serial"
    assert what_if_free(rows).set_index("arm").loc["a", "model_s"] == 12.0


@pytest.mark.slow
def test_notebook_06_renders_the_shipped_run(tmp_path):
    import nbformat
    import papermill

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "06-where-time-goes.ipynb"
    stored = nbformat.read(notebook, as_version=4)
    assert not any(o for c in stored.cells for o in c.get("outputs", []))  # stored clean
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(notebook), str(out), cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False, parameters={"results_path": "shipped"})
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # breakdown + what-if
    loopback, _, wan = text.partition("=== where-time-goes-debian-minbase-wan-200m "
                                      "(profile wan-200m) ===")
    assert "=== where-time-goes-debian-minbase (profile loopback) ===" in loopback
    for part in (loopback, wan):
        for metric in ("duration_s", "decompress_s", "unpack_s", "unpack_tail_s"):
            assert f"debian-minbase: {metric} =" in part, metric
    for metric in ("hash_s", "write_s"):  # timed since the wan-200m run
        assert f"debian-minbase: {metric} =" in wan, metric
    tables = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "wan-200m" in tables
    assert "loopback" in tables

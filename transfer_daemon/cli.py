"""Click commands: parse, call, print — no logic of their own.

Exit status: 0 success, 2 bad usage or invalid config (the key is named), 1 runtime failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps

import click

from transfer_daemon.config import Config, ConfigError, load_config
from transfer_daemon.errors import TransferDaemonError

CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="Config file (default: $TRANSFERS_CONFIG, then ./etc/transfer-daemon.toml).",
)


def _load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(f"transfer-daemon: {exc}", err=True)
        sys.exit(2)


def _chain_name(config: Config, chain: str) -> str:
    try:
        return config.chain(chain).name
    except KeyError:
        known = ", ".join(c.name for c in config.chains)
        raise click.BadParameter(f"unknown chain {chain!r} (configured: {known})", param_hint="'--chain'") from None


def _reports_errors(command: Callable) -> Callable:
    """Runtime failures become one line on stderr and exit 1 — never a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"transfer-daemon: {exc}", err=True)
            sys.exit(2)
        except TransferDaemonError as exc:
            click.echo(f"transfer-daemon: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="transfer-daemon")
def main() -> None:
    """Keep a Postgres copy of ERC-20 transfers and serve it over HTTP."""


@main.command()
@CONFIG_OPTION
@click.option("--foreground/--detach", default=True, help="Stay attached (systemd) or daemonize.")
@_reports_errors
def start(config_path: str | None, foreground: bool) -> None:
    """Run the supervisor, one worker per chain and the API."""
    config = _load(config_path)
    from transfer_daemon.daemon.start import run_start

    sys.exit(run_start(config, foreground=foreground, announce=click.echo))


@main.command()
@CONFIG_OPTION
@_reports_errors
def stop(config_path: str | None) -> None:
    """Signal a running supervisor (pidfile) to stop gracefully."""
    config = _load(config_path)
    from transfer_daemon.daemon.control import stop_daemon

    sys.exit(stop_daemon(config, echo=click.echo))


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_reports_errors
def status(config_path: str | None, as_json: bool) -> None:
    """Per-chain table: lag, last success, rows, worker state."""
    config = _load(config_path)
    from transfer_daemon.report import render_table, status_document

    report = status_document(config)
    click.echo(json.dumps(report, indent=2) if as_json else render_table(report))


@main.command()
@CONFIG_OPTION
@click.option("-f", "follow", is_flag=True, help="Keep printing new lines.")
@click.option("--chain", default=None, help="Only lines of this chain.")
@click.option("--level", default=None,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False))
@_reports_errors
def logs(config_path: str | None, follow: bool, chain: str | None, level: str | None) -> None:
    """Tail the daemon log."""
    config = _load(config_path)
    from transfer_daemon.daemon.logtail import tail_logs

    sys.exit(tail_logs(config, follow=follow, chain=chain, level=level, echo=click.echo))


@main.command()
@CONFIG_OPTION
@_reports_errors
def migrate(config_path: str | None) -> None:
    """Create or upgrade the schema and exit."""
    config = _load(config_path)
    from transfer_daemon.db.bootstrap import migrate_command

    applied = migrate_command(config)
    click.echo(f"schema up to date ({applied} migration(s) applied)")


@main.command()
@CONFIG_OPTION
@click.option("--chain", required=True, help="Chain name or id.")
@click.option("--days", type=click.IntRange(min=0), default=None, help="Override backfill_days.")
@_reports_errors
def backfill(config_path: str | None, chain: str, days: int | None) -> None:
    """Backfill one chain in the foreground with a progress bar."""
    config = _load(config_path)
    name = _chain_name(config, chain)
    from transfer_daemon.ingest.worker import backfill_foreground

    steps = 1000
    with click.progressbar(length=steps, label=f"backfill {name}", show_eta=True, show_percent=True) as bar:
        cursor = backfill_foreground(config, name, days,
                                     lambda _cursor, share: bar.update(round(share * steps) - bar.pos))
        bar.update(steps - bar.pos if cursor.backfill_done else 0)
    state = "done" if cursor.backfill_done else "not done"
    click.echo(f"backfill {name}: {state}; stored blocks {cursor.backfilled_block}..{cursor.synced_block}"
               f" (target block {cursor.backfill_target_block})")


@main.command()
@CONFIG_OPTION
@click.option("--chain", default=None, help="Only this chain (name or id); default every chain.")
@click.option("--hours", type=click.IntRange(min=1), default=24, show_default=True,
              help="Compare the last N hours, up to `confirmations` below the head.")
@click.option("--repair", is_flag=True,
              help="Re-ingest the blocks that differ, one transaction per block (the exit status still reports "
                   "the difference found; run verify again to confirm).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_reports_errors
def verify(config_path: str | None, chain: str | None, hours: int, repair: bool, as_json: bool) -> None:
    """Compare a settled window with the upstream, transfer by transfer.

    Exit 0 when every chain matches, 1 when one differs (named, with counts) or could not be read.
    """
    config = _load(config_path)
    names = [c.name for c in config.chains] if chain is None else [_chain_name(config, chain)]
    from transfer_daemon.ingest.verify import document, render, verify_command

    report = verify_command(config, names, hours, repair)
    click.echo(json.dumps(document(report), indent=2) if as_json else render(report))
    sys.exit(0 if report.ok else 1)


@main.command()
@CONFIG_OPTION
@click.option("--chain", required=True, help="Chain name or id.")
@_reports_errors
def resume(config_path: str | None, chain: str) -> None:
    """Clear a chain halted by a deep reorg or paused by a refusing upstream, once you have looked."""
    config = _load(config_path)
    name = _chain_name(config, chain)
    from transfer_daemon.daemon.control import resume_chain

    sys.exit(resume_chain(config, name, echo=click.echo))


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8545, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--chains", default="1:etherscan,25:rpc_logs", show_default=True,
              help="id:kind,… with kind etherscan | etherscan_logs | rpc_logs")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--history-days", type=click.FloatRange(min=0), default=120, show_default=True)
@click.option("--block-time", type=click.FloatRange(min=0.01), default=12.0, show_default=True)
@click.option("--transfers-per-block", type=click.FloatRange(min=0), default=2.0, show_default=True)
@click.option("--rate-limit", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Calls per second per key before the Etherscan rate-limit answer (0 = none).")
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--reorg-every", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--reorg-depth", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--index-lag", type=click.IntRange(min=0), default=0, show_default=True,
              help="Explorer tokentx/getLogs leave out the newest N blocks that module=proxy already reports.")
@click.option("--null-headers", type=click.IntRange(min=0), default=0, show_default=True,
              help="JSON-RPC eth_getBlockByNumber answers null for the newest N blocks.")
@click.option("--poison-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Every N-th block also serves one row with an out-of-range logIndex (0 = never).")
@click.option("--daily-cap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Explorer calls per key per UTC day before Etherscan's daily-limit answer (0 = none).")
@_reports_errors
def simulate(**options) -> None:
    """Serve deterministic synthetic chains behind explorer and JSON-RPC APIs on loopback."""
    from transfer_daemon.simulate import config_from_options, serve

    try:
        sim_config = config_from_options(**options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    serve(sim_config, options["host"], options["port"],
          ready=lambda url, listing: click.echo(f"simulator listening on {url}\n{json.dumps(listing)}"))


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="API port.")
@click.option("--data-dir", type=click.Path(file_okay=False), default="var/demo", show_default=True)
@_reports_errors
def demo(port: int, data_dir: str) -> None:
    """Simulated upstream + embedded Postgres + the whole daemon, zero config."""
    from transfer_daemon.demo import run_demo

    sys.exit(run_demo(port, data_dir, echo=click.echo))


if __name__ == "__main__":
    main()

"""`usage`: a monitor of LLM token usage.

The chat components count usage in kv with `kv.increment` (keys below); every tick this
monitor reads the counters, compares them with the values it stored at its previous tick
and reports per-minute rates and totals:

- samples `tokens_in_per_min`, `tokens_out_per_min`, `tokens_per_min` (in + out) and
  `requests_per_min` (not on the first tick, which has nothing to compare with), and
  `tokens_in_total`, `tokens_out_total`, `requests_total`;
- a `warning` alert when `tokens_per_min` is above `tokens_per_min_warn`.

A counter lower than at the previous tick was reset (e.g. expired): its whole value counts
as the increase. Config (`[component.usage.config]`, every key optional):

- `tokens_in_key` (default `usage:tokens_in`): prompt tokens;
- `tokens_out_key` (default `usage:tokens_out`): completion tokens;
- `requests_key` (default `usage:requests`): completions;
- `state_key` (default `usage:monitor_state`): where this monitor keeps the previous tick;
- `tokens_per_min_warn` (default 100000; 0 disables the alert).

The keys live in this component's kv namespace: set `kv_namespace` to the namespace of the
component that writes the counters (e.g. `kv_namespace = "chat"`). Malformed config, a
counter that is not an integer or a kv error fails the tick with an error naming the key.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.monitoring import Alert, Report, Sample, Severity, Tick
from wit_world.imports import config, kv

COUNTERS = ("tokens_in", "tokens_out", "requests")
DEFAULT_KEYS = {
    "tokens_in_key": "usage:tokens_in",
    "tokens_out_key": "usage:tokens_out",
    "requests_key": "usage:requests",
    "state_key": "usage:monitor_state",
}
DEFAULT_TOKENS_PER_MIN_WARN = 100_000.0


class ConfigError(Exception):
    """A malformed `[component.usage.config]` value; the message names the key."""


class KvError(Exception):
    """A kv call failed, or a counter is not an integer; the message names the key."""


class Monitoring(exports.Monitoring):
    def run(self, tick: Tick) -> Report:
        try:
            return measure(tick)
        except (ConfigError, KvError) as e:
            raise Err(str(e)) from None


def config_key(name: str) -> str:
    value = config.get(name)
    if value is None:
        return DEFAULT_KEYS[name]
    if not value.strip():
        raise ConfigError(f"config `{name}`: must not be empty")
    return value


def config_number(name: str, default: float) -> float:
    value = config.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"config `{name}`: not a number: `{value}`") from None
    if not number >= 0 or number == float("inf"):
        raise ConfigError(f"config `{name}`: must be a finite number >= 0, got `{value}`")
    return number


def kv_get(key: str) -> bytes | None:
    try:
        return kv.get(key)
    except Err as e:
        raise KvError(f"kv `{key}`: {describe(e.value)}") from None


def read_counter(key: str) -> int:
    raw = kv_get(key)
    if raw is None:
        return 0
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise KvError(f"kv `{key}`: not an integer: {raw[:40]!r}") from None


def read_state(key: str) -> dict[str, int] | None:
    """The previous tick: {"at_ms": int, "tokens_in": int, ...}, or None (first tick)."""
    raw = kv_get(key)
    if raw is None:
        return None
    try:
        state = json.loads(raw)
        if all(isinstance(state[k], int) for k in ("at_ms", *COUNTERS)):
            return {k: int(state[k]) for k in ("at_ms", *COUNTERS)}
    except (ValueError, TypeError, KeyError):
        pass
    return None  # unreadable: start over as on a first tick


def describe(error: object) -> str:
    """A kv error as `kind: message`, e.g. `quota-exceeded: ...`."""
    name = type(error).__name__.removeprefix("Error_")
    kind = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name).lower()
    return f"{kind}: {getattr(error, 'value', '')}"


def measure(tick: Tick) -> Report:
    keys = {c: config_key(f"{c}_key") for c in COUNTERS}
    state_key = config_key("state_key")
    warn = config_number("tokens_per_min_warn", DEFAULT_TOKENS_PER_MIN_WARN)

    now = {c: read_counter(keys[c]) for c in COUNTERS}
    previous = read_state(state_key)

    samples = [Sample(f"{c}_total", [], float(now[c])) for c in COUNTERS]
    alerts = []
    elapsed_ms = tick.scheduled_at_ms - previous["at_ms"] if previous else 0
    if previous and elapsed_ms > 0:
        minutes = elapsed_ms / 60_000
        rate = {}
        for c in COUNTERS:
            delta = now[c] - previous[c]
            rate[c] = (delta if delta >= 0 else now[c]) / minutes
        tokens = rate["tokens_in"] + rate["tokens_out"]
        samples += [
            Sample("tokens_in_per_min", [], rate["tokens_in"]),
            Sample("tokens_out_per_min", [], rate["tokens_out"]),
            Sample("tokens_per_min", [], tokens),
            Sample("requests_per_min", [], rate["requests"]),
        ]
        if warn > 0 and tokens > warn:
            alerts.append(
                Alert(
                    Severity.WARNING,
                    f"token usage: {tokens:.0f} tokens/min (warning above {warn:g})",
                )
            )

    if previous is None or elapsed_ms > 0:
        state = json.dumps({"at_ms": tick.scheduled_at_ms, **now}).encode()
        try:
            kv.set(state_key, state, None)
        except Err as e:
            raise KvError(f"kv `{state_key}`: {describe(e.value)}") from None
    return Report(samples, alerts)

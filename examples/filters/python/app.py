"""Example Poplar message filter in Python (world `filter-plugin`).

Behaviour (identical in the Python, JavaScript and C examples):

* `validate()` checks the config key `tag` (default "python"): 1 to 64
  visible ASCII characters, since it ends up in a header field.
* `classify(env, msg)` looks at the headers and at most the first 4096
  octets of the body (which starts at `msg.body_offset()`), then decides,
  first match wins:
    - Subject contains "[SPAM]" (any case)       -> file-into("Junk")
    - envelope mail-from is blocked@example.org  -> reject(...)
    - body prefix contains the word DISCARD-ME   -> discard
    - otherwise                                  -> accept
  and always adds `X-Poplar-Filter: <tag>` and
  `X-Poplar-Body-Prefix-Octets: <n>` (body octets examined).
* One info line is logged per message.
* `classify` returns a `result`: returning a `Verdict` is `ok`; raising
  `Err("why")` tells the host the filter cannot decide (it then applies the
  chain entry's `on_failure`). These examples always decide.

Build with ./build.sh; it writes filter.wasm next to this file.
"""

from wit_world import exports
from wit_world.exports.filter import (
    Action,
    Action_Accept,
    Action_Discard,
    Action_FileInto,
    Action_Reject,
    Envelope,
    Verdict,
)
from wit_world.imports import host
from wit_world.imports.message import Message
from wit_world.imports.types import Header
from componentize_py_types import Err

LANGUAGE = "python"
BODY_PREFIX_MAX = 4096
BLOCKED_SENDER = "blocked@example.org"
SPAM_MARK = "[spam]"
DISCARD_WORD = b"DISCARD-ME"


def _tag() -> tuple[str, str | None]:
    """Returns (tag, error). On a bad value the tag is the default."""
    for key, value in host.config():
        if key == "tag":
            if not (1 <= len(value) <= 64) or any(
                not ("\x21" <= c <= "\x7e") for c in value
            ):
                return LANGUAGE, (
                    f"config key `tag` must be 1 to 64 visible ASCII characters "
                    f"(no spaces), got \"{value}\""
                )
            return value, None
    return LANGUAGE, None


def _body_prefix(msg: Message) -> bytes:
    """At most BODY_PREFIX_MAX octets of the body. The host found where it
    starts (just past the empty line after the header block; the size when
    there is none), so the header block is never read here."""
    start = msg.body_offset()
    prefix = b""
    while len(prefix) < BODY_PREFIX_MAX:
        chunk = msg.read(start + len(prefix), BODY_PREFIX_MAX - len(prefix))
        if not chunk:
            break
        prefix += chunk
    return prefix


def _is_word_byte(b: int) -> bool:
    return (
        48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b == 0x5F or b == 0x2D
    )


def _contains_word(hay: bytes, word: bytes) -> bool:
    """True if `word` occurs with no letter, digit, '_' or '-' either side."""
    i = hay.find(word)
    while i >= 0:
        end = i + len(word)
        before_ok = i == 0 or not _is_word_byte(hay[i - 1])
        after_ok = end == len(hay) or not _is_word_byte(hay[end])
        if before_ok and after_ok:
            return True
        i = hay.find(word, i + 1)
    return False


def _ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def _action_text(action: Action) -> str:
    if isinstance(action, Action_FileInto):
        return f"file-into({action.value})"
    if isinstance(action, Action_Reject):
        return f"reject({action.value})"
    if isinstance(action, Action_Discard):
        return "discard"
    return "accept"


class Filter(exports.Filter):
    def validate(self) -> None:
        _, error = _tag()
        if error is not None:
            raise Err(error)

    def classify(self, env: Envelope, msg: Message) -> Verdict:
        # Returning is `ok`; `raise Err("...")` would be `err`.
        tag, _ = _tag()
        headers = msg.headers()
        prefix = _body_prefix(msg)

        sender = env.mail_from
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1]

        action: Action
        if any(
            _ascii_lower(h.name) == "subject" and SPAM_MARK in _ascii_lower(h.value)
            for h in headers
        ):
            action = Action_FileInto("Junk")
        elif _ascii_lower(sender) == BLOCKED_SENDER:
            action = Action_Reject(f"sender blocked by {tag} filter")
        elif _contains_word(prefix, DISCARD_WORD):
            action = Action_Discard()
        else:
            action = Action_Accept()

        host.log(
            host.Level.INFO,
            f"filter={tag} from=<{sender}> rcpt=<{env.rcpt_to}> "
            f"size={msg.size()} body-prefix={len(prefix)} "
            f"action={_action_text(action)}",
        )
        return Verdict(
            action,
            [
                Header("X-Poplar-Filter", tag),
                Header("X-Poplar-Body-Prefix-Octets", str(len(prefix))),
            ],
        )

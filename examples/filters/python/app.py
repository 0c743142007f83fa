"""Example Poplar message filter in Python (world `filter-plugin`).

Behaviour (identical in the Python, JavaScript and C examples):

* `validate()` checks the config key `tag` (default "python"): 1 to 64
  visible ASCII characters, since it ends up in a header field.
* `classify(env, msg)` looks at the headers and at most the first 4096
  octets of the body, then decides, first match wins:
    - Subject contains "[SPAM]" (any case)       -> file-into("Junk")
    - envelope mail-from is blocked@example.org  -> reject(...)
    - body prefix contains the word DISCARD-ME   -> discard
    - otherwise                                  -> accept
  and always adds `X-Poplar-Filter: <tag>` and
  `X-Poplar-Body-Prefix-Octets: <n>` (body octets examined).
* One info line is logged per message.

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
CHUNK = 4096
# Give up looking for the end of the header block after this many octets
# (the message is then treated as having no body we look at).
HEADER_SCAN_MAX = 256 * 1024
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


def _header_end(buf: bytes, scanned: int) -> int:
    """Offset where the body starts, or -1 if the blank line is not in buf.

    The header block ends at the first empty line (LF or CRLF endings);
    a message that starts with an empty line has an empty header block.
    `scanned` is how much of buf an earlier call already looked at.
    """
    if buf.startswith(b"\r\n"):
        return 2
    if buf.startswith(b"\n"):
        return 1
    i = max(0, scanned - 2)
    while True:
        i = buf.find(b"\n", i)
        if i < 0 or i + 1 >= len(buf):
            return -1
        if buf[i + 1 : i + 2] == b"\n":
            return i + 2
        if buf[i + 1 : i + 3] == b"\r\n":
            return i + 3
        if buf[i + 1 : i + 2] == b"\r" and i + 2 >= len(buf):
            return -1  # "\n\r" at the end of what we have: need more
        i += 1


def _body_prefix(msg: Message) -> bytes:
    """Reads the header block and at most BODY_PREFIX_MAX body octets."""
    buf = b""
    eof = False
    body_start = -1
    while body_start < 0:
        if eof or len(buf) >= HEADER_SCAN_MAX:
            return b""
        scanned = len(buf)
        chunk = msg.read(len(buf), CHUNK)
        if len(chunk) < CHUNK:
            eof = True
        buf += chunk
        body_start = _header_end(buf, scanned)
    prefix = buf[body_start : body_start + BODY_PREFIX_MAX]
    while len(prefix) < BODY_PREFIX_MAX and not eof:
        want = BODY_PREFIX_MAX - len(prefix)
        chunk = msg.read(body_start + len(prefix), want)
        if len(chunk) < want:
            eof = True
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

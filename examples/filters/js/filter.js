// Example Poplar message filter in JavaScript (world `filter-plugin`).
//
// Behaviour (identical in the Python, JavaScript and C examples):
//
// * `validate()` checks the config key `tag` (default "js"): 1 to 64
//   visible ASCII characters, since it ends up in a header field.
// * `classify(env, msg)` looks at the headers and at most the first 4096
//   octets of the body, then decides, first match wins:
//     - Subject contains "[SPAM]" (any case)       -> file-into("Junk")
//     - envelope mail-from is blocked@example.org  -> reject(...)
//     - body prefix contains the word DISCARD-ME   -> discard
//     - otherwise                                  -> accept
//   and always adds `X-Poplar-Filter: <tag>` and
//   `X-Poplar-Body-Prefix-Octets: <n>` (body octets examined).
// * One info line is logged per message.
//
// Mapping of the WIT types to JavaScript (componentize-js / jco):
// u64 is a BigInt (`msg.read(offset, len)` takes a BigInt offset and a
// Number length, `msg.size()` returns a BigInt), list<u8> is a Uint8Array,
// records use camelCase fields (`env.mailFrom`, `addHeaders`), variants are
// `{ tag: 'file-into', val: 'Junk' }`, enums are strings ('info'), and a
// `result<_, string>` export returns normally for ok and throws for err.
//
// Build with ./build.sh (npm ci && npm run build); it writes filter.wasm.

import { log, config } from 'poplar:plugin/host@0.1.0';

const LANGUAGE = 'js';
const BODY_PREFIX_MAX = 4096;
const CHUNK = 4096;
// Give up looking for the end of the header block after this many octets
// (the message is then treated as having no body we look at).
const HEADER_SCAN_MAX = 256 * 1024;
const BLOCKED_SENDER = 'blocked@example.org';
const SPAM_MARK = '[spam]';
const DISCARD_WORD = new TextEncoder().encode('DISCARD-ME');

// Returns [tag, error]; on a bad value the tag is the default.
function readTag() {
  for (const [key, value] of config()) {
    if (key !== 'tag') continue;
    const ok = value.length >= 1 && value.length <= 64 && /^[\x21-\x7e]*$/.test(value);
    if (!ok) {
      return [
        LANGUAGE,
        `config key \`tag\` must be 1 to 64 visible ASCII characters (no spaces), got "${value}"`,
      ];
    }
    return [value, null];
  }
  return [LANGUAGE, null];
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// Offset where the body starts, or -1 if the blank line is not in buf.
// The header block ends at the first empty line (LF or CRLF endings); a
// message that starts with an empty line has an empty header block.
// `scanned` is how much of buf an earlier call already looked at.
function headerEnd(buf, scanned) {
  const LF = 10;
  const CR = 13;
  if (buf.length >= 2 && buf[0] === CR && buf[1] === LF) return 2;
  if (buf.length >= 1 && buf[0] === LF) return 1;
  let i = Math.max(0, scanned - 2);
  for (;;) {
    i = buf.indexOf(LF, i);
    if (i < 0 || i + 1 >= buf.length) return -1;
    if (buf[i + 1] === LF) return i + 2;
    if (buf[i + 1] === CR) {
      if (i + 2 >= buf.length) return -1; // "\n\r" at the end: need more
      if (buf[i + 2] === LF) return i + 3;
    }
    i += 1;
  }
}

// Reads the header block and at most BODY_PREFIX_MAX body octets.
function bodyPrefix(msg) {
  let buf = new Uint8Array(0);
  let eof = false;
  let bodyStart = -1;
  while (bodyStart < 0) {
    if (eof || buf.length >= HEADER_SCAN_MAX) return new Uint8Array(0);
    const scanned = buf.length;
    const chunk = msg.read(BigInt(buf.length), CHUNK);
    if (chunk.length < CHUNK) eof = true;
    buf = concat(buf, chunk);
    bodyStart = headerEnd(buf, scanned);
  }
  let prefix = buf.slice(bodyStart, bodyStart + BODY_PREFIX_MAX);
  while (prefix.length < BODY_PREFIX_MAX && !eof) {
    const want = BODY_PREFIX_MAX - prefix.length;
    const chunk = msg.read(BigInt(bodyStart + prefix.length), want);
    if (chunk.length < want) eof = true;
    prefix = concat(prefix, chunk);
  }
  return prefix;
}

function isWordByte(b) {
  return (
    (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b === 0x5f || b === 0x2d
  );
}

// True if `word` occurs with no letter, digit, '_' or '-' either side.
function containsWord(hay, word) {
  outer: for (let i = hay.indexOf(word[0]); i >= 0 && i + word.length <= hay.length; i = hay.indexOf(word[0], i + 1)) {
    for (let j = 1; j < word.length; j++) {
      if (hay[i + j] !== word[j]) continue outer;
    }
    const end = i + word.length;
    const beforeOk = i === 0 || !isWordByte(hay[i - 1]);
    const afterOk = end === hay.length || !isWordByte(hay[end]);
    if (beforeOk && afterOk) return true;
  }
  return false;
}

function asciiLower(s) {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

function actionText(action) {
  switch (action.tag) {
    case 'file-into':
      return `file-into(${action.val})`;
    case 'reject':
      return `reject(${action.val})`;
    default:
      return action.tag;
  }
}

export const filter = {
  validate() {
    const [, error] = readTag();
    if (error !== null) throw error;
  },

  classify(env, msg) {
    const [tag] = readTag();
    const headers = msg.headers();
    const prefix = bodyPrefix(msg);

    let sender = env.mailFrom;
    if (sender.startsWith('<') && sender.endsWith('>')) sender = sender.slice(1, -1);

    let action;
    if (headers.some((h) => asciiLower(h.name) === 'subject' && asciiLower(h.value).includes(SPAM_MARK))) {
      action = { tag: 'file-into', val: 'Junk' };
    } else if (asciiLower(sender) === BLOCKED_SENDER) {
      action = { tag: 'reject', val: `sender blocked by ${tag} filter` };
    } else if (containsWord(prefix, DISCARD_WORD)) {
      action = { tag: 'discard' };
    } else {
      action = { tag: 'accept' };
    }

    log(
      'info',
      `filter=${tag} from=<${sender}> rcpt=<${env.rcptTo}> ` +
        `size=${msg.size()} body-prefix=${prefix.length} action=${actionText(action)}`,
    );
    return {
      action,
      addHeaders: [
        { name: 'X-Poplar-Filter', value: tag },
        { name: 'X-Poplar-Body-Prefix-Octets', value: String(prefix.length) },
      ],
    };
  },
};

// Example Poplar message filter in C (world `filter-plugin`).
//
// Behaviour (identical in the Python, JavaScript and C examples):
//
// * `validate()` checks the config key `tag` (default "c"): 1 to 64
//   visible ASCII characters, since it ends up in a header field.
// * `classify(env, msg)` looks at the headers and at most the first 4096
//   octets of the body (which starts at the message's `body-offset`), then
//   decides, first match wins:
//     - Subject contains "[SPAM]" (any case)       -> file-into("Junk")
//     - envelope mail-from is blocked@example.org  -> reject(...)
//     - body prefix contains the word DISCARD-ME   -> discard
//     - otherwise                                  -> accept
//   and always adds `X-Poplar-Filter: <tag>` and
//   `X-Poplar-Body-Prefix-Octets: <n>` (body octets examined).
// * One info line is logged per message.
// * `classify` returns a `result`: the function returns true with the
//   verdict in *ret for `ok`, or false with a malloc'd reason in *err when
//   the filter cannot decide (the host then applies the chain entry's
//   `on_failure`). These examples always decide.
//
// Memory rules of the wit-bindgen C bindings (gen/, see regen.sh):
// * Values returned by imports (config list, headers, read bytes) are
//   malloc'd by the bindings; free them with the matching *_free function.
// * Export arguments (the envelope) are owned by the callee: free them.
// * Everything an export returns (verdict strings, the header list, the
//   validate error) must be malloc'd: the bindings free it after the host
//   has copied it (the cabi_post_* functions).
// * The borrowed `msg` handle is dropped by the bindings after `classify`
//   returns (generated with --autodrop-borrows yes).
//
// Build with ./build.sh; it writes filter.wasm.

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/filter_plugin.h"

#define LANGUAGE "c"
#define BODY_PREFIX_MAX 4096

static const char BLOCKED_SENDER[] = "blocked@example.org";
static const char SPAM_MARK[] = "[spam]";
static const char DISCARD_WORD[] = "DISCARD-ME";

typedef filter_plugin_string_t str_t;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p == NULL) abort();
    return p;
}

static uint8_t ascii_lower(uint8_t c) {
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

// Case-insensitive (ASCII) equality of a WIT string and a C string.
static bool str_ieq(const str_t *s, const char *lit) {
    size_t n = strlen(lit);
    if (s->len != n) return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(s->ptr[i]) != ascii_lower((uint8_t)lit[i])) return false;
    return true;
}

// Case-insensitive (ASCII) substring search; `lit` must be lower case.
static bool contains_ci(const uint8_t *hay, size_t len, const char *lit) {
    size_t n = strlen(lit);
    for (size_t i = 0; i + n <= len; i++) {
        size_t j = 0;
        while (j < n && ascii_lower(hay[i + j]) == (uint8_t)lit[j]) j++;
        if (j == n) return true;
    }
    return false;
}

static bool is_word_byte(uint8_t b) {
    return (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
           b == '_' || b == '-';
}

// True if `word` occurs with no letter, digit, '_' or '-' either side.
static bool contains_word(const uint8_t *hay, size_t len, const char *word) {
    size_t n = strlen(word);
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(hay + i, word, n) != 0) continue;
        bool before_ok = i == 0 || !is_word_byte(hay[i - 1]);
        bool after_ok = i + n == len || !is_word_byte(hay[i + n]);
        if (before_ok && after_ok) return true;
    }
    return false;
}

static char *dup_n(const uint8_t *p, size_t n) {
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

// Reads the config key `tag`. Returns the tag (malloc'd; the default on a
// bad value) and sets *err to a malloc'd message if the value is bad.
static char *read_tag(char **err) {
    filter_plugin_list_tuple2_string_string_t cfg;
    poplar_plugin_host_config(&cfg);
    char *tag = NULL;
    *err = NULL;
    for (size_t i = 0; i < cfg.len && tag == NULL && *err == NULL; i++) {
        str_t *key = &cfg.ptr[i].f0, *val = &cfg.ptr[i].f1;
        if (key->len != 3 || memcmp(key->ptr, "tag", 3) != 0) continue;
        bool ok = val->len >= 1 && val->len <= 64;
        for (size_t j = 0; ok && j < val->len; j++)
            ok = val->ptr[j] >= 0x21 && val->ptr[j] <= 0x7e;
        if (ok) {
            tag = dup_n(val->ptr, val->len);
        } else {
            const char *fmt =
                "config key `tag` must be 1 to 64 visible ASCII characters (no spaces), got \"%.*s\"";
            int n = snprintf(NULL, 0, fmt, (int)val->len, (const char *)val->ptr);
            *err = xmalloc((size_t)n + 1);
            snprintf(*err, (size_t)n + 1, fmt, (int)val->len, (const char *)val->ptr);
        }
    }
    filter_plugin_list_tuple2_string_string_free(&cfg);
    if (tag == NULL) tag = dup_n((const uint8_t *)LANGUAGE, strlen(LANGUAGE));
    return tag;
}

// Reads at most BODY_PREFIX_MAX octets of the body into `prefix`; returns
// how many. The host found where the body starts (just past the empty line
// after the header block; the size when there is none), so the header
// block is never read here.
static size_t body_prefix(poplar_plugin_message_borrow_message_t msg,
                          uint8_t prefix[BODY_PREFIX_MAX]) {
    uint64_t start = poplar_plugin_message_method_message_body_offset(msg);
    size_t n = 0;
    while (n < BODY_PREFIX_MAX) {
        filter_plugin_list_u8_t got;
        uint32_t want = (uint32_t)(BODY_PREFIX_MAX - n);
        poplar_plugin_message_method_message_read(msg, start + n, want, &got);
        size_t take = got.len < want ? got.len : want;
        if (take > 0) memcpy(prefix + n, got.ptr, take);
        filter_plugin_list_u8_free(&got);
        if (take == 0) break;
        n += take;
    }
    return n;
}

static void set_header(exports_poplar_plugin_filter_header_t *h, const char *name,
                       const char *value) {
    filter_plugin_string_dup(&h->name, name);
    filter_plugin_string_dup(&h->value, value);
}

bool exports_poplar_plugin_filter_validate(filter_plugin_string_t *err) {
    char *msg;
    free(read_tag(&msg));
    if (msg == NULL) return true;
    err->ptr = (uint8_t *)msg;  // malloc'd: the bindings free it
    err->len = strlen(msg);
    return false;
}

// Returns true with the verdict in *ret (`ok`); returning false with a
// malloc'd reason in *err would be `err`.
bool exports_poplar_plugin_filter_classify(exports_poplar_plugin_filter_envelope_t *env,
                                           exports_poplar_plugin_filter_borrow_message_t msg,
                                           exports_poplar_plugin_filter_verdict_t *ret,
                                           filter_plugin_string_t *err) {
    (void)err;
    char *bad;
    char *tag = read_tag(&bad);
    free(bad);

    poplar_plugin_message_list_header_t headers;
    poplar_plugin_message_method_message_headers(msg, &headers);
    static uint8_t prefix[BODY_PREFIX_MAX];
    size_t n = body_prefix(msg, prefix);

    str_t sender = env->mail_from;
    if (sender.len >= 2 && sender.ptr[0] == '<' && sender.ptr[sender.len - 1] == '>') {
        sender.ptr += 1;
        sender.len -= 2;
    }

    bool spam = false;
    for (size_t i = 0; i < headers.len && !spam; i++) {
        str_t *name = &headers.ptr[i].name, *value = &headers.ptr[i].value;
        spam = str_ieq(name, "subject") && contains_ci(value->ptr, value->len, SPAM_MARK);
    }
    poplar_plugin_message_list_header_free(&headers);

    exports_poplar_plugin_filter_action_t *action = &ret->action;
    const char *action_name;
    const char *action_arg = NULL;
    if (spam) {
        action->tag = EXPORTS_POPLAR_PLUGIN_FILTER_ACTION_FILE_INTO;
        filter_plugin_string_dup(&action->val.file_into, "Junk");
        action_name = "file-into";
        action_arg = "Junk";
    } else if (str_ieq(&sender, BLOCKED_SENDER)) {
        static const char fmt[] = "sender blocked by %s filter";
        int len = snprintf(NULL, 0, fmt, tag);
        char *reason = xmalloc((size_t)len + 1);
        snprintf(reason, (size_t)len + 1, fmt, tag);
        action->tag = EXPORTS_POPLAR_PLUGIN_FILTER_ACTION_REJECT;
        action->val.reject.ptr = (uint8_t *)reason;  // malloc'd: freed by the bindings
        action->val.reject.len = (size_t)len;
        action_name = "reject";
        action_arg = reason;
    } else if (contains_word(prefix, n, DISCARD_WORD)) {
        action->tag = EXPORTS_POPLAR_PLUGIN_FILTER_ACTION_DISCARD;
        action_name = "discard";
    } else {
        action->tag = EXPORTS_POPLAR_PLUGIN_FILTER_ACTION_ACCEPT;
        action_name = "accept";
    }

    char octets[24];
    snprintf(octets, sizeof octets, "%zu", n);
    ret->add_headers.len = 2;
    ret->add_headers.ptr = xmalloc(2 * sizeof(exports_poplar_plugin_filter_header_t));
    set_header(&ret->add_headers.ptr[0], "X-Poplar-Filter", tag);
    set_header(&ret->add_headers.ptr[1], "X-Poplar-Body-Prefix-Octets", octets);

    static const char fmt[] =
        "filter=%s from=<%.*s> rcpt=<%.*s> size=%llu body-prefix=%zu action=%s%s%s%s";
    unsigned long long size = poplar_plugin_message_method_message_size(msg);
    const char *open = action_arg ? "(" : "", *arg = action_arg ? action_arg : "",
               *close = action_arg ? ")" : "";
    int len = snprintf(NULL, 0, fmt, tag, (int)sender.len, (const char *)sender.ptr,
                       (int)env->rcpt_to.len, (const char *)env->rcpt_to.ptr, size, n,
                       action_name, open, arg, close);
    char *line = xmalloc((size_t)len + 1);
    snprintf(line, (size_t)len + 1, fmt, tag, (int)sender.len, (const char *)sender.ptr,
             (int)env->rcpt_to.len, (const char *)env->rcpt_to.ptr, size, n, action_name,
             open, arg, close);
    str_t text = {(uint8_t *)line, (size_t)len};
    poplar_plugin_host_log(POPLAR_PLUGIN_HOST_LEVEL_INFO, &text);
    free(line);

    free(tag);
    exports_poplar_plugin_filter_envelope_free(env);
    return true;
}

//! A deterministic synthetic corpus of ham and spam for the quality test.
//!
//! - Ham: work mail (35%), personal mail (25%; some of it about money and
//!   prizes), shop newsletters (25%) and account notifications (15%, in
//!   phishing's vocabulary).
//! - Spam: pharmacy (28%), advance-fee fraud sent through the same mail
//!   providers as personal mail (22%), phishing (22%), a pitch hidden in
//!   padding (14%; 30% of them padded with the recipient's own kind of
//!   work and personal words, the rest with dictionary words) and shop-like
//!   mailings, some through the bulk-mail services the newsletters use (14%).
//!
//! Not trivially separable on purpose: both classes share a common
//! vocabulary and the commercial words (`free`, `offer`, `order`,
//! `account`, `$` amounts, `unsubscribe`), sender names, some relays, and
//! all encodings (base64, quoted-printable, HTML, encoded subjects); spam
//! adds mixed case, words split by tags, entities and hidden comments.
//! Every message carries a few made-up words (names, codes). The padded
//! spam and the shop-like mailings are the hard cases: they mostly score in
//! the unsure middle rather than above the threshold.

/// SplitMix64: small, fast and good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The vocabularies the messages are drawn from.
#[rustfmt::skip]
mod words {
    pub const COMMON: &[&str] = &[
        "the", "and", "you", "your", "this", "that", "with", "for", "have", "will", "are", "our",
        "from", "about", "just", "more", "here", "there", "what", "when", "which", "would",
        "could", "should", "been", "also", "into", "some", "time", "today", "week", "year",
        "information", "please", "thanks", "email", "message", "new", "now", "get", "make", "know",
        "need", "see", "want", "only", "all", "can", "not", "but", "they", "them", "was", "were",
        "one", "two", "first", "last", "next", "good", "great", "best", "right", "still", "very",
        "well", "back", "again", "take", "look", "find", "help", "let", "send", "soon", "team",
        "update", "details",
    ];
    /// Words both kinds of commercial mail use.
    pub const COMMERCIAL: &[&str] = &[
        "free", "offer", "order", "account", "save", "discount", "price", "deal", "limited",
        "exclusive", "members", "shipping", "click", "link", "unsubscribe", "today", "special",
        "gift", "bonus", "online", "payment", "card", "service", "customer", "access", "secure",
        "subscription", "receive", "available", "guaranteed", "money", "win", "prize",
    ];
    pub const WORK: &[&str] = &[
        "project", "deadline", "meeting", "review", "deploy", "build", "release", "budget",
        "quarter", "report", "slides", "agenda", "draft", "feedback", "schedule", "sprint",
        "roadmap", "migration", "database", "server", "ticket", "proposal", "contract", "invoice",
        "estimate", "manager", "colleague", "office", "conference", "call", "notes", "minutes",
        "action", "items", "approval", "timeline", "milestone", "design", "spec", "requirements",
        "testing", "bug", "patch", "branch", "merge", "staging", "production", "backup", "outage",
        "incident", "analysis", "metrics", "dashboard", "hiring", "interview", "onboarding",
        "vendor", "workshop", "presentation", "quarterly", "forecast", "compliance", "audit",
        "kickoff", "retrospective", "standup", "latency", "cluster", "pipeline", "regression",
    ];
    pub const PERSONAL: &[&str] = &[
        "dinner", "weekend", "kids", "birthday", "photos", "trip", "holiday", "vacation", "garden",
        "recipe", "movie", "concert", "tickets", "family", "mum", "dad", "sister", "brother",
        "wedding", "party", "coffee", "lunch", "hike", "beach", "camping", "weather", "school",
        "homework", "dog", "cat", "doctor", "appointment", "flight", "hotel", "book", "library",
        "game", "soccer", "grandma", "cake", "picnic", "neighbours", "bike", "train", "museum",
        "cousin", "baby", "soup", "rain", "sunday", "saturday", "lovely", "miss", "hugs", "love",
    ];
    pub const NEWSLETTER: &[&str] = &[
        "newsletter", "issue", "edition", "subscribe", "article", "read", "community", "notes",
        "webinar", "event", "register", "sale", "store", "collection", "season", "preferences",
        "privacy", "policy", "view", "browser", "blog", "podcast", "tutorial", "guide", "tips",
        "roundup", "featured", "launch", "announcing", "stories", "readers", "archive",
    ];
    pub const NOTIFICATION: &[&str] = &[
        "password", "reset", "security", "login", "verify", "statement", "receipt", "shipped",
        "delivery", "tracking", "renewal", "confirm", "changed", "device", "signed", "package",
        "balance", "transaction", "billing", "reference", "number", "support", "settings",
    ];
    pub const PHARMA: &[&str] = &[
        "viagra", "cialis", "levitra", "pills", "pharmacy", "prescription", "meds", "medication",
        "generic", "tablets", "dosage", "erectile", "enhancement", "weight", "loss", "diet",
        "supplement", "pain", "relief", "xanax", "valium", "tramadol", "cheap", "canadian",
        "approved", "worldwide", "discreet", "packaging", "brand", "potency", "stamina", "doctors",
    ];
    pub const MONEY: &[&str] = &[
        "million", "dollars", "inheritance", "transfer", "beneficiary", "bank", "barrister",
        "fund", "lottery", "winner", "claim", "confidential", "urgent", "partnership", "deceased",
        "late", "kin", "percent", "share", "western", "union", "wire", "investment", "opportunity",
        "profit", "returns", "crypto", "bitcoin", "trading", "income", "earn", "cash", "foreign",
        "assistance", "trust", "proceed", "modalities", "usd", "sum",
    ];
    pub const PHISH: &[&str] = &[
        "verify", "account", "suspended", "login", "password", "security", "unusual", "activity",
        "confirm", "identity", "expire", "hours", "restore", "locked", "billing", "dear", "valued",
        "member", "paypal", "apple", "limitation", "immediately", "failure", "notice",
        "department", "verification", "suspension", "credentials",
    ];
    /// Dictionary and literary words, as in the padding of poisoned spam.
    pub const LITERARY: &[&str] = &[
        "river", "ancient", "whisper", "lantern", "harbor", "velvet", "meadow", "thunder",
        "crimson", "shadow", "silver", "orchard", "voyage", "marble", "twilight", "feather",
        "kingdom", "echo", "amber", "glacier", "quiet", "wander", "horizon", "ember", "willow",
        "sparrow", "canyon", "tapestry", "lullaby", "compass", "riddle", "meadowlark", "granite",
        "saffron", "hollow", "cathedral", "ivory", "pilgrim", "tide", "melody", "prairie",
        "thistle", "cobalt", "falcon", "summit", "parchment", "delta", "orchid", "lighthouse",
    ];
    pub const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ren", "tos", "va", "ber", "qui", "zu", "dan", "el", "or", "pex", "sil",
        "tra", "nor", "gu", "fen", "ix", "ro", "sa", "mek", "lu", "tor",
    ];
    pub const FIRST_NAMES: &[&str] = &[
        "Alice", "Bob", "Carol", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas",
        "Katya", "Liam", "Maria", "Noor", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tomoko",
    ];
    pub const LAST_NAMES: &[&str] = &[
        "Smith", "Garcia", "Müller", "Nakamura", "Okafor", "Rossi", "Dubois", "Kowalski",
        "Andersen", "Silva", "Chen", "Haddad",
    ];
    pub const WORK_DOMAINS: &[&str] = &[
        "acme-corp.example", "globex.example", "initech.example",
    ];
    pub const MAIL_DOMAINS: &[&str] = &[
        "mailbox.example", "fastpost.example", "homenet.example",
    ];
    pub const VENDOR_DOMAINS: &[&str] = &[
        "bookshop.example", "outdoorgear.example", "techweekly.example", "cityopera.example",
    ];
    pub const SERVICE_DOMAINS: &[&str] = &[
        "mybank.example", "parcelco.example", "cloudhost.example",
    ];
    pub const SPAM_TLDS: &[&str] = &[
        "ru", "top", "xyz", "biz", "info", "cn", "example",
    ];
    pub const GOOD_MAILERS: &[&str] = &[
        "Thunderbird 115.3", "Apple Mail (2.3731)", "Outlook 16.0",
    ];
    pub const BAD_MAILERS: &[&str] = &[
        "The Bat! 4.2", "Mailer 7.1 Pro", "Outlook 16.0",
    ];
}
use words::*;

/// The generated messages.
pub struct Corpus {
    pub spam: Vec<Vec<u8>>,
    pub ham: Vec<Vec<u8>>,
}

/// `spam` spam and `ham` ham messages from `seed`.
pub fn generate(seed: u64, spam: usize, ham: usize) -> Corpus {
    let mut rng = Rng::new(seed);
    Corpus {
        spam: (0..spam).map(|_| spam_message(&mut rng)).collect(),
        ham: (0..ham).map(|_| ham_message(&mut rng)).collect(),
    }
}

/// A message being put together.
struct Draft {
    from: String,
    reply_to: Option<String>,
    to: String,
    subject: String,
    /// `Received` field values, oldest hop first.
    received: Vec<String>,
    mailer: Option<&'static str>,
    list: bool,
    paragraphs: Vec<String>,
    links: Vec<String>,
    /// Encoding and shape of the body.
    shape: Shape,
    attachment: Option<(&'static str, &'static str)>,
    /// Spam tricks in HTML.
    tricks: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    QuotedPrintable,
    Base64,
    Html,
    HtmlBase64,
    Alternative,
}

/// A nonsense word: names, codes and typos every real corpus is full of.
fn rare_word(rng: &mut Rng) -> String {
    (0..rng.range(2, 4)).map(|_| *rng.pick(SYLLABLES)).collect()
}

/// A sentence drawing from weighted word pools.
fn sentence(rng: &mut Rng, pools: &[(&[&str], usize)], bang: f64) -> String {
    let total: usize = pools.iter().map(|(_, w)| w).sum();
    let mut words = Vec::new();
    for _ in 0..rng.range(6, 14) {
        if rng.chance(0.04) {
            words.push(rare_word(rng));
            continue;
        }
        let mut n = rng.below(total);
        let pool = pools
            .iter()
            .find(|(_, w)| {
                if n < *w {
                    true
                } else {
                    n -= w;
                    false
                }
            })
            .map(|(p, _)| *p)
            .unwrap_or(COMMON);
        words.push(rng.pick(pool).to_string());
    }
    let mut s = words.join(" ");
    s[..1].make_ascii_uppercase();
    s.push(if rng.chance(bang) { '!' } else { '.' });
    s
}

fn paragraphs(
    rng: &mut Rng,
    n: (usize, usize),
    pools: &[(&[&str], usize)],
    bang: f64,
) -> Vec<String> {
    (0..rng.range(n.0, n.1))
        .map(|_| {
            (0..rng.range(1, 4))
                .map(|_| sentence(rng, pools, bang))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn person(rng: &mut Rng) -> (String, String) {
    let first = *rng.pick(FIRST_NAMES);
    let last = *rng.pick(LAST_NAMES);
    (format!("{first} {last}"), first.to_lowercase())
}

fn spam_domain(rng: &mut Rng) -> String {
    format!(
        "{}-{}.{}",
        rare_word(rng),
        rare_word(rng),
        rng.pick(SPAM_TLDS)
    )
}

fn subject(rng: &mut Rng, pool: &[&str], n: (usize, usize)) -> String {
    let words: Vec<&str> = (0..rng.range(n.0, n.1)).map(|_| *rng.pick(pool)).collect();
    let mut s = words.join(" ");
    s[..1].make_ascii_uppercase();
    s
}

fn ham_message(rng: &mut Rng) -> Vec<u8> {
    let (name, login) = person(rng);
    let to = "Alex Reader <alex@home.example>".to_owned();
    let kind = rng.below(100);
    let draft = if kind < 35 {
        // Work mail, sometimes with accents (quoted-printable) and files.
        let domain = rng.pick(WORK_DOMAINS);
        let pools: &[(&[&str], usize)] = &[(WORK, 5), (COMMON, 4), (PERSONAL, 1)];
        let mut paragraphs = paragraphs(rng, (1, 4), pools, 0.03);
        if rng.chance(0.3) {
            paragraphs.push("Merci, à bientôt — café at the usual place?".to_owned());
        }
        if rng.chance(0.2) {
            paragraphs.push(sentence(
                rng,
                &[(COMMERCIAL, 1), (WORK, 2), (COMMON, 2)],
                0.0,
            ));
        }
        Draft {
            from: format!("{name} <{login}@{domain}>"),
            reply_to: None,
            to,
            subject: format!(
                "{}{}",
                if rng.chance(0.4) { "Re: " } else { "" },
                subject(rng, WORK, (2, 5))
            ),
            received: org_relay(rng, domain),
            mailer: Some(*rng.pick(GOOD_MAILERS)),
            list: false,
            paragraphs,
            links: if rng.chance(0.3) {
                vec![format!("https://wiki.{domain}/{}", rng.pick(WORK))]
            } else {
                Vec::new()
            },
            shape: *rng.pick(&[
                Shape::Plain,
                Shape::Plain,
                Shape::QuotedPrintable,
                Shape::Alternative,
            ]),
            attachment: if rng.chance(0.2) {
                Some(*rng.pick(&[
                    ("application/pdf", "report.pdf"),
                    ("application/vnd.ms-excel", "budget.xls"),
                    ("image/png", "diagram.png"),
                ]))
            } else {
                None
            },
            tricks: false,
        }
    } else if kind < 60 {
        // Personal mail; some of it talks about money and prizes.
        let domain = rng.pick(MAIL_DOMAINS);
        let mut pools: Vec<(&[&str], usize)> = vec![(PERSONAL, 5), (COMMON, 5)];
        if rng.chance(0.15) {
            pools.push((COMMERCIAL, 2));
            pools.push((MONEY, 1));
        }
        Draft {
            from: format!("{name} <{login}@{domain}>"),
            reply_to: None,
            to,
            subject: subject(rng, PERSONAL, (1, 4)),
            received: freemail(rng, domain),
            mailer: rng.chance(0.5).then(|| *rng.pick(GOOD_MAILERS)),
            list: false,
            paragraphs: paragraphs(rng, (1, 3), &pools, 0.15),
            links: Vec::new(),
            shape: *rng.pick(&[
                Shape::Plain,
                Shape::Base64,
                Shape::Alternative,
                Shape::QuotedPrintable,
            ]),
            attachment: rng.chance(0.15).then_some(("image/jpeg", "photo.jpg")),
            tricks: false,
        }
    } else if kind < 85 {
        // Newsletters and shop mailings: promotional, HTML, links.
        let domain = rng.pick(VENDOR_DOMAINS);
        let pools: &[(&[&str], usize)] = &[(NEWSLETTER, 4), (COMMERCIAL, 3), (COMMON, 4)];
        let mut paragraphs = paragraphs(rng, (2, 5), pools, 0.2);
        if rng.chance(0.5) {
            paragraphs.push(format!(
                "Save ${} on orders over ${} this week only.",
                rng.range(5, 50),
                rng.range(50, 200)
            ));
        }
        Draft {
            from: format!(
                "{} News <news@{domain}>",
                domain.split('.').next().unwrap_or("")
            ),
            reply_to: None,
            to,
            subject: subject(rng, &[NEWSLETTER, COMMERCIAL].concat(), (2, 6)),
            received: esp(rng),
            mailer: None,
            list: true,
            paragraphs,
            links: (0..rng.range(1, 4))
                .map(|_| format!("https://{domain}/{}", rng.pick(NEWSLETTER)))
                .collect(),
            shape: *rng.pick(&[Shape::Alternative, Shape::Html, Shape::Alternative]),
            attachment: None,
            tricks: false,
        }
    } else {
        // Account notifications that use phishing's vocabulary.
        let domain = rng.pick(SERVICE_DOMAINS);
        let pools: &[(&[&str], usize)] = &[(NOTIFICATION, 4), (COMMON, 4), (COMMERCIAL, 2)];
        let mut paragraphs = paragraphs(rng, (1, 3), pools, 0.0);
        paragraphs.push(format!(
            "Amount: ${}.{:02}, reference {}.",
            rng.range(3, 900),
            rng.below(100),
            rng.next_u64() % 1_000_000
        ));
        Draft {
            from: format!("No Reply <no-reply@{domain}>"),
            reply_to: None,
            to,
            subject: subject(rng, NOTIFICATION, (2, 4)),
            received: org_relay(rng, domain),
            mailer: None,
            list: false,
            paragraphs,
            links: vec![format!("https://www.{domain}/account")],
            shape: *rng.pick(&[Shape::Html, Shape::Alternative, Shape::Plain]),
            attachment: None,
            tricks: false,
        }
    };
    render(rng, draft)
}

fn spam_message(rng: &mut Rng) -> Vec<u8> {
    let domain = spam_domain(rng);
    let to = if rng.chance(0.3) {
        "undisclosed-recipients:;".to_owned()
    } else {
        "alex@home.example".to_owned()
    };
    let kind = rng.below(100);
    let mut draft = if kind < 28 {
        // Pharmacy.
        let pools: &[(&[&str], usize)] = &[(PHARMA, 5), (COMMERCIAL, 3), (COMMON, 4)];
        Draft {
            from: format!(
                "{} <{}@{domain}>",
                rng.pick(&["Pharmacy", "Online Meds", "Dr. Health"]),
                rare_word(rng)
            ),
            reply_to: None,
            to,
            subject: subject(rng, &[PHARMA, COMMERCIAL].concat(), (2, 5)),
            received: botnet(rng),
            mailer: rng.chance(0.5).then(|| *rng.pick(BAD_MAILERS)),
            list: false,
            paragraphs: paragraphs(rng, (1, 3), pools, 0.4),
            links: vec![format!("http://www.{domain}/{}", rare_word(rng))],
            shape: *rng.pick(&[
                Shape::Html,
                Shape::HtmlBase64,
                Shape::Base64,
                Shape::Alternative,
            ]),
            attachment: None,
            tricks: true,
        }
    } else if kind < 50 {
        // Advance-fee fraud and get-rich-quick.
        let (name, _) = person(rng);
        let pools: &[(&[&str], usize)] = &[(MONEY, 5), (COMMON, 5), (COMMERCIAL, 1)];
        let mut paragraphs = paragraphs(rng, (2, 5), pools, 0.1);
        paragraphs.push(format!(
            "The sum of ${},{:03},000 USD will be released to you.",
            rng.range(2, 40),
            rng.below(1000)
        ));
        let from_domain = rng.pick(MAIL_DOMAINS);
        Draft {
            from: format!("{name} <{}@{from_domain}>", rare_word(rng)),
            reply_to: Some(format!("{}@{domain}", rare_word(rng))),
            to,
            subject: subject(rng, MONEY, (1, 4)),
            received: if rng.chance(0.7) {
                freemail(rng, from_domain)
            } else {
                botnet(rng)
            },
            mailer: None,
            list: false,
            paragraphs,
            links: Vec::new(),
            shape: *rng.pick(&[Shape::Plain, Shape::QuotedPrintable, Shape::Plain]),
            attachment: None,
            tricks: false,
        }
    } else if kind < 72 {
        // Phishing: a service's look, a look-alike link.
        let brand = rng.pick(&["PayPal", "Apple", "MyBank", "ParcelCo"]);
        let pools: &[(&[&str], usize)] = &[(PHISH, 5), (NOTIFICATION, 2), (COMMON, 4)];
        let link = if rng.chance(0.3) {
            format!(
                "http://{}@{}.{domain}/verify",
                brand.to_lowercase(),
                rare_word(rng)
            )
        } else {
            format!("https://{}-secure.{domain}/login", brand.to_lowercase())
        };
        Draft {
            from: format!("{brand} Security <service@{domain}>"),
            reply_to: None,
            to,
            subject: subject(rng, PHISH, (2, 5)),
            received: botnet(rng),
            mailer: None,
            list: false,
            paragraphs: paragraphs(rng, (1, 3), pools, 0.2),
            links: vec![link],
            shape: *rng.pick(&[Shape::Html, Shape::Alternative, Shape::HtmlBase64]),
            attachment: rng
                .chance(0.15)
                .then_some(("application/zip", "invoice.zip")),
            tricks: rng.chance(0.5),
        }
    } else if kind < 86 {
        // Poisoned: a short pitch hidden in dictionary words or, harder,
        // in the recipient's own kind of words.
        let pitches: [&[&str]; 3] = [PHARMA, MONEY, PHISH];
        let pitch = *rng.pick(&pitches);
        let padding: &[(&[&str], usize)] = if rng.chance(0.3) {
            &[(PERSONAL, 3), (WORK, 3), (COMMON, 4)]
        } else {
            &[(LITERARY, 5), (COMMON, 4), (PERSONAL, 1)]
        };
        let mut paragraphs = paragraphs(rng, (2, 4), padding, 0.05);
        let at = rng.below(paragraphs.len() + 1);
        paragraphs.insert(
            at,
            sentence(rng, &[(pitch, 4), (COMMERCIAL, 2), (COMMON, 2)], 0.5),
        );
        Draft {
            from: format!("{} <{}@{domain}>", person(rng).0, rare_word(rng)),
            reply_to: None,
            to,
            subject: subject(rng, &[PERSONAL, LITERARY, pitch].concat(), (2, 4)),
            received: if rng.chance(0.2) {
                let provider = *rng.pick(MAIL_DOMAINS);
                freemail(rng, provider)
            } else {
                botnet(rng)
            },
            mailer: rng.chance(0.5).then(|| *rng.pick(BAD_MAILERS)),
            list: false,
            paragraphs,
            links: vec![format!("http://{domain}/{}", rare_word(rng))],
            shape: *rng.pick(&[Shape::Plain, Shape::Html, Shape::Base64]),
            attachment: None,
            tricks: rng.chance(0.3),
        }
    } else {
        // Newsletter look-alikes and short lures.
        let pools: &[(&[&str], usize)] = &[(COMMERCIAL, 5), (COMMON, 4), (NEWSLETTER, 1)];
        Draft {
            from: format!(
                "{} <deals@{domain}>",
                rng.pick(&["Deals", "Best Offers", "Lucky Winner"])
            ),
            reply_to: None,
            to,
            subject: subject(rng, COMMERCIAL, (2, 5)),
            received: if rng.chance(0.3) {
                esp(rng)
            } else {
                botnet(rng)
            },
            mailer: None,
            list: rng.chance(0.5),
            paragraphs: paragraphs(rng, (1, 2), pools, 0.5),
            links: vec![format!("http://{domain}/{}", rare_word(rng))],
            shape: *rng.pick(&[Shape::Html, Shape::Alternative, Shape::Plain]),
            attachment: None,
            tricks: rng.chance(0.5),
        }
    };
    if draft.tricks && rng.chance(0.5) {
        draft.subject = mixed_case(rng, &draft.subject);
    }
    if rng.chance(0.3) {
        draft.subject = format!("{}!!", draft.subject.to_uppercase());
    }
    render(rng, draft)
}

/// The network a domain's mail servers live in (fixed per domain).
fn network(domain: &str) -> String {
    let h = domain
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("{}.{}.{}", 128 + h % 64, (h >> 8) % 256, (h >> 16) % 256)
}

fn random_ip(rng: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        rng.range(1, 223),
        rng.below(256),
        rng.below(256),
        rng.range(1, 254)
    )
}

/// The last hop: a named server handing the message to our MX.
fn to_mx(host: &str, ip: &str) -> String {
    format!("from {host} ({host} [{ip}]) by mx.home.example")
}

/// An organisation's own servers: internal hops, then its outbound relay.
fn org_relay(rng: &mut Rng, domain: &str) -> Vec<String> {
    let mut hops: Vec<String> = (0..rng.range(0, 2))
        .map(|_| {
            format!(
                "from [10.{}.{}.{}] by mail.{domain}",
                rng.below(256),
                rng.below(256),
                rng.range(1, 254)
            )
        })
        .collect();
    let ip = format!("{}.{}", network(domain), rng.range(2, 30));
    hops.push(to_mx(&format!("mail.{domain}"), &ip));
    hops
}

/// Submission from anywhere on the internet to a mail provider, which
/// relays it.
fn freemail(rng: &mut Rng, domain: &str) -> Vec<String> {
    let ip = format!("{}.{}", network(domain), rng.range(2, 60));
    vec![
        format!("from [{}] by smtp.{domain}", random_ip(rng)),
        to_mx(&format!("smtp-out{}.{domain}", rng.range(1, 9)), &ip),
    ]
}

/// A bulk-mail service: used by newsletters and abused by spammers.
fn esp(rng: &mut Rng) -> Vec<String> {
    let esp = *rng.pick(&["bulkmailer.example", "sendwave.example"]);
    let ip = format!("{}.{}", network(esp), rng.range(2, 200));
    vec![to_mx(&format!("mta{}.{esp}", rng.range(1, 40)), &ip)]
}

/// A hijacked home computer talking to our MX directly.
fn botnet(rng: &mut Rng) -> Vec<String> {
    let ip = random_ip(rng);
    let helo = if rng.chance(0.5) {
        format!(
            "dsl-{}.dynamic.{}.example",
            ip.replace('.', "-"),
            rng.pick(&["cheapnet", "telcoland", "fastisp", "homenet"])
        )
    } else {
        rare_word(rng)
    };
    vec![format!("from {helo} ([{ip}]) by mx.home.example")]
}

/// `ViAgRa`-style case flipping.
fn mixed_case(rng: &mut Rng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.chance(0.5) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Spam's HTML disguises: split words, entities, hidden comments.
fn disguise(rng: &mut Rng, text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.len() < 5 || !rng.chance(0.3) {
                return w.to_owned();
            }
            let cut = rng.range(1, w.len() - 2);
            match rng.below(4) {
                0 => format!("{}<b></b>{}", &w[..cut], &w[cut..]),
                1 => format!("&#{};{}", w.as_bytes()[0], &w[1..]),
                2 => format!("{}<!-- {} -->", w, rare_word(rng)),
                _ => mixed_case(rng, w),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn html_body(rng: &mut Rng, d: &Draft) -> String {
    let mut html = String::from("<html><body>\n");
    if d.tricks {
        html.push_str("<font color=\"#ff0000\" size=\"5\">");
    }
    for p in &d.paragraphs {
        let p = if d.tricks {
            disguise(rng, p)
        } else {
            p.clone()
        };
        html.push_str(&format!("<p>{p}</p>\n"));
    }
    for link in &d.links {
        let text = if d.tricks { "CLICK HERE" } else { "Read more" };
        html.push_str(&format!("<p><a href=\"{link}\">{text}</a></p>\n"));
    }
    if d.tricks {
        html.push_str("</font><img src=\"http://img.track.example/p.gif\">");
    }
    if d.list {
        html.push_str("<p><small>To unsubscribe, update your preferences.</small></p>\n");
    }
    html.push_str("</body></html>\n");
    html
}

fn text_body(d: &Draft) -> String {
    let mut text = d.paragraphs.join("\n\n");
    for link in &d.links {
        text.push_str(&format!("\n\n{link}"));
    }
    if d.list {
        text.push_str("\n\n--\nUnsubscribe: reply with 'unsubscribe'.");
    }
    text.push('\n');
    text
}

fn render(rng: &mut Rng, d: Draft) -> Vec<u8> {
    let mut m = String::new();
    for (i, hop) in d.received.iter().rev().enumerate() {
        m.push_str(&format!(
            "Received: {hop}; Mon, 1 Jan 2024 10:0{i}:00 +0000\r\n"
        ));
    }
    m.push_str(&format!("From: {}\r\n", d.from));
    m.push_str(&format!("To: {}\r\n", d.to));
    if let Some(r) = &d.reply_to {
        m.push_str(&format!("Reply-To: {r}\r\n"));
    }
    let subject = if !d.subject.is_ascii() || rng.chance(0.1) {
        format!("=?UTF-8?B?{}?=", base64(d.subject.as_bytes()))
    } else {
        d.subject.clone()
    };
    m.push_str(&format!("Subject: {subject}\r\n"));
    let id_domain = d
        .from
        .rsplit('@')
        .next()
        .unwrap_or("x")
        .trim_end_matches('>');
    m.push_str(&format!("Message-ID: <{}@{id_domain}>\r\n", rng.next_u64()));
    if let Some(mailer) = d.mailer {
        m.push_str(&format!("X-Mailer: {mailer}\r\n"));
    }
    if d.list {
        m.push_str("List-Unsubscribe: <mailto:unsubscribe@lists.example>\r\n");
    }
    m.push_str("MIME-Version: 1.0\r\n");

    let body = match d.shape {
        Shape::Plain => leaf("text/plain; charset=utf-8", "8bit", &text_body(&d)),
        Shape::QuotedPrintable => leaf(
            "text/plain; charset=utf-8",
            "quoted-printable",
            &quoted_printable(text_body(&d).as_bytes()),
        ),
        Shape::Base64 => leaf(
            "text/plain; charset=utf-8",
            "base64",
            &base64_lines(text_body(&d).as_bytes()),
        ),
        Shape::Html => leaf("text/html; charset=utf-8", "8bit", &html_body(rng, &d)),
        Shape::HtmlBase64 => leaf(
            "text/html; charset=utf-8",
            "base64",
            &base64_lines(html_body(rng, &d).as_bytes()),
        ),
        Shape::Alternative => {
            let b = format!("=_alt{}", rng.next_u64() % 100_000);
            let text = leaf(
                "text/plain; charset=utf-8",
                "quoted-printable",
                &quoted_printable(text_body(&d).as_bytes()),
            );
            let html = leaf("text/html; charset=utf-8", "8bit", &html_body(rng, &d));
            format!(
                "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n\
                 This is a multi-part message in MIME format.\r\n\
                 --{b}\r\n{text}\r\n--{b}\r\n{html}\r\n--{b}--\r\n"
            )
        }
    };
    let body = match d.attachment {
        None => body,
        Some((mime, name)) => {
            let b = format!("=_mix{}", rng.next_u64() % 100_000);
            let data: Vec<u8> = (0..rng.range(300, 3000))
                .map(|_| rng.next_u64() as u8)
                .collect();
            let file = format!(
                "Content-Type: {mime}; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}",
                base64_lines(&data)
            );
            format!(
                "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n\
                 --{b}\r\n{body}\r\n--{b}\r\n{file}\r\n--{b}--\r\n"
            )
        }
    };
    m.push_str(&body);
    m.into_bytes()
}

/// A single part: its Content-Type and Content-Transfer-Encoding fields, a
/// blank line and the (already encoded) body.
fn leaf(ctype: &str, cte: &str, body: &str) -> String {
    format!("Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}")
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_lines(data: &[u8]) -> String {
    let encoded = base64(data);
    let mut out = String::new();
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push_str("\r\n");
    }
    out
}

fn quoted_printable(data: &[u8]) -> String {
    let mut out = String::new();
    let mut column = 0;
    for &b in data {
        if b == b'\n' {
            out.push_str("\r\n");
            column = 0;
            continue;
        }
        let piece = if (b == b' ' || b.is_ascii_graphic()) && b != b'=' {
            (b as char).to_string()
        } else {
            format!("={b:02X}")
        };
        if column + piece.len() > 75 {
            out.push_str("=\r\n");
            column = 0;
        }
        column += piece.len();
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bayes::{Action, Bayes, Lesson};
    use crate::config::Config;
    use crate::mime::{decode_base64, decode_qp};
    use crate::test_util::{Raw, TempDir};

    #[test]
    fn encoders_round_trip() {
        let data = "Grüße, naïve café = 100% — ok\nnext line with a fairly long text that must be wrapped somewhere\n";
        assert_eq!(
            decode_base64(base64_lines(data.as_bytes()).as_bytes()),
            data.as_bytes()
        );
        let qp = quoted_printable(data.as_bytes());
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        assert_eq!(
            decode_qp(qp.as_bytes()),
            data.replace('\n', "\r\n").as_bytes()
        );
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn generation_is_deterministic() {
        let a = generate(7, 20, 20);
        let b = generate(7, 20, 20);
        assert_eq!(a.spam, b.spam);
        assert_eq!(a.ham, b.ham);
        assert_ne!(generate(8, 20, 20).spam, a.spam);
    }

    /// Trains on 600 + 600 messages in batches of 200 (as the host does) and
    /// measures precision and recall of the spam verdict on 200 + 200
    /// held-out messages. `BAYES_CORPUS_SEED=<n>` tries another corpus.
    #[test]
    fn held_out_precision_and_recall() {
        const TRAIN: usize = 600;
        const TEST: usize = 200;
        let seed: u64 = std::env::var("BAYES_CORPUS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_2024);
        let corpus = generate(seed, TRAIN + TEST, TRAIN + TEST);
        let dir = TempDir::new();
        let config = Config {
            model: dir.path().join("bayes.model"),
            ..Config::default()
        };
        let mut bayes = Bayes::new();
        let mut log = |_, _: &str| {};
        fn lessons(msgs: &[Vec<u8>], spam: bool) -> impl Iterator<Item = Lesson<Raw>> + '_ {
            msgs.iter().map(move |m| Lesson {
                msg: Raw::new(m),
                spam,
                unlearn: false,
            })
        }
        for batch in 0..TRAIN / 100 {
            let range = batch * 100..(batch + 1) * 100;
            let batch = lessons(&corpus.spam[range.clone()], true)
                .chain(lessons(&corpus.ham[range], false))
                .collect();
            let report = bayes.train(&config, batch, &mut log).unwrap();
            assert_eq!(report.learned, 200);
        }

        let mut verdicts = |msgs: &[Vec<u8>]| -> Vec<(f64, bool)> {
            msgs.iter()
                .map(|m| {
                    let v = bayes.classify(&config, &Raw::new(m), &mut log).unwrap();
                    let score = v.headers[0].1.parse().unwrap();
                    (score, v.action != Action::Accept)
                })
                .collect()
        };
        let spam = verdicts(&corpus.spam[TRAIN..]);
        let ham = verdicts(&corpus.ham[TRAIN..]);
        let caught = spam.iter().filter(|(_, junk)| *junk).count();
        let false_alarms = ham.iter().filter(|(_, junk)| *junk).count();
        let precision = caught as f64 / (caught + false_alarms).max(1) as f64;
        let recall = caught as f64 / TEST as f64;
        let unsure = |v: &[(f64, bool)]| v.iter().filter(|(s, _)| (0.1..0.9).contains(s)).count();
        println!(
            "held-out {TEST} spam + {TEST} ham after training on {TRAIN} + {TRAIN}: \
             precision {precision:.3}, recall {recall:.3} \
             ({caught} spam caught, {false_alarms} ham flagged; \
             {} spam and {} ham scored between 0.1 and 0.9)",
            unsure(&spam),
            unsure(&ham)
        );
        assert!(precision >= 0.95, "precision {precision}");
        assert!(recall >= 0.9, "recall {recall}");
    }
}

//! The kind of fact a question asks for, read from its wording (English only), and whether a
//! sentence can state one.
//!
//! "How long until I get reimbursed?" asks for a duration: of two sentences that share the
//! question's words, the one that holds a number ("within 7-10 days") answers it and the one
//! that does not ("Reimbursements are processed on Airbase") does not. The extractive answerer
//! prefers sentences of the asked kind; a question whose kind the wording does not tell (or in
//! another language) is [`Expect::Any`] and nothing changes for it.

/// What a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// An amount, count or rate ("how many", "how much", "what percentage").
    Quantity,
    /// A length of time ("how long", "how soon", "how quickly"): a number with a unit of
    /// time ("7-10 days", "a 30-minute call", "within 72 hours").
    Duration,
    /// How often ("how often", "how frequently"): "weekly", "every 6 months", "twice a year".
    Frequency,
    /// A point or period in time ("when", "what time", "by when", "which day").
    Time,
    /// The wording does not say.
    Any,
}

const DURATION_OPENERS: &[&str] = &[
    "how long",
    "how soon",
    "how quickly",
    "how fast",
    "within how long",
    "for how long",
];

const FREQUENCY_OPENERS: &[&str] = &["how often", "how frequently"];

const QUANTITY_OPENERS: &[&str] = &[
    "how many",
    "how much",
    "how old",
    "how big",
    "how large",
    "how far",
    "what percentage",
    "what percent",
    "what share",
    "what amount",
    "what is the maximum",
    "what is the minimum",
    "what's the maximum",
    "what's the minimum",
    "what's the most",
    "what is the most",
    "what is the limit",
    "what is the cap",
    "what is the yearly cap",
    "what is the annual",
    "what is the monthly",
    "what is the budget",
];

const TIME_OPENERS: &[&str] = &[
    "when",
    "by when",
    "until when",
    "what time",
    "what date",
    "which date",
    "what day",
    "which day",
    "on which day",
    "on what day",
    "at what time",
    "what year",
    "which year",
    "which month",
    "what month",
];

/// Reads the expected kind of answer from the question's opening words.
pub fn expected(question: &str) -> Expect {
    let q: String = question
        .trim_start()
        .chars()
        .map(|c| {
            if c == '’' {
                '\''
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    // Each clause of the question in turn, so a lead-in does not hide the question ("I just
    // interviewed a candidate. By when ...?", "Once I submit an expense, how long ...?"); the
    // first clause that opens with an asking phrase decides.
    let opens = |clause: &str, openers: &[&str]| {
        openers.iter().any(|o| {
            clause
                .strip_prefix(o)
                .is_some_and(|rest| rest.is_empty() || !rest.starts_with(char::is_alphanumeric))
        })
    };
    for clause in q.split(['.', ',', ':', ';', '?', '!']).map(str::trim_start) {
        if opens(clause, DURATION_OPENERS) {
            return Expect::Duration;
        }
        if opens(clause, FREQUENCY_OPENERS) {
            return Expect::Frequency;
        }
        if opens(clause, QUANTITY_OPENERS) {
            return Expect::Quantity;
        }
        if opens(clause, TIME_OPENERS) {
            return Expect::Time;
        }
    }
    Expect::Any
}

const NUMBER_WORDS: &[&str] = &[
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "fifteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "hundred",
    "thousand",
    "million",
    "billion",
    "half",
    "quarter",
    "twice",
    "once",
    "dozen",
    "single",
    "double",
    "daily",
    "weekly",
    "biweekly",
    "monthly",
    "quarterly",
    "annually",
    "yearly",
    "percent",
    "unlimited",
];

const TIME_WORDS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "weekday",
    "weekend",
    "morning",
    "afternoon",
    "evening",
    "noon",
    "midnight",
    "today",
    "tomorrow",
    "before",
    "after",
    "within",
    "prior",
    "until",
    "during",
    "immediately",
    "end",
];

/// Units of time a duration is counted in (singular; a trailing "s" is allowed).
const TIME_UNITS: &[&str] = &[
    "second",
    "sec",
    "minute",
    "min",
    "hour",
    "hr",
    "h",
    "day",
    "night",
    "week",
    "wk",
    "month",
    "quarter",
    "year",
    "yr",
    "sprint",
    "fortnight",
];

/// Words that may stand between a count and its unit ("3 business days", "2-4 working weeks").
const UNIT_FILLERS: &[&str] = &[
    "business",
    "working",
    "calendar",
    "full",
    "more",
    "additional",
    "consecutive",
    "to",
    "or",
    "and",
    "of",
];

const FREQUENCY_WORDS: &[&str] = &[
    "daily",
    "weekly",
    "biweekly",
    "fortnightly",
    "monthly",
    "bimonthly",
    "quarterly",
    "annually",
    "yearly",
    "semiannually",
    "hourly",
    "nightly",
    "once",
    "twice",
    "every",
    "each",
    "per",
    "cadence",
];

/// Words that count a unit ("three months", "a week", "a couple of days").
const COUNT_WORDS: &[&str] = &[
    "a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "ninety",
    "hundred", "half", "few", "several", "couple",
];

fn is_number_word(w: &str) -> bool {
    w.chars().next().is_some_and(|c| c.is_ascii_digit())
        || COUNT_WORDS.iter().any(|n| n.eq_ignore_ascii_case(w))
}

fn is_time_unit(w: &str) -> bool {
    let lower = w.to_ascii_lowercase();
    let singular = lower.strip_suffix('s').unwrap_or(&lower);
    TIME_UNITS.contains(&singular) || TIME_UNITS.contains(&lower.as_str())
}

/// Whether the sentence counts a length of time: a number, then (after at most two filler
/// words) a unit of time ("7-10 day", "30-minute", "72h", "a week", "three months").
fn states_duration(sentence: &str) -> bool {
    // Words and the hyphens between them ("2-4", "30-minute"); digits glued to a unit ("72h",
    // "24hrs") are split into the number and the unit.
    let mut words: Vec<&str> = Vec::new();
    for w in sentence.split(|c: char| !(c.is_alphanumeric() || c == '-')) {
        for part in w.split_inclusive('-') {
            let part = part.trim_end_matches('-');
            if part.is_empty() {
                continue;
            }
            let digits = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            if digits > 0 && digits < part.len() {
                words.push(&part[..digits]);
                words.push(&part[digits..]);
            } else {
                words.push(part);
            }
        }
    }
    words.iter().enumerate().any(|(i, w)| {
        is_number_word(w)
            && words[i + 1..]
                .iter()
                .take(3)
                .take_while(|n| !is_time_unit(n))
                .all(|n| {
                    is_number_word(n) || UNIT_FILLERS.iter().any(|f| f.eq_ignore_ascii_case(n))
                })
            && words[i + 1..].iter().take(3).any(|n| is_time_unit(n))
    })
}

/// Whether `sentence` can state an answer of kind `expect` (always for [`Expect::Any`]).
pub fn satisfies(expect: Expect, sentence: &str) -> bool {
    // Runs once per candidate sentence on the answer path: compare in place, no allocation.
    let has = |list: &[&str]| {
        sentence
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| list.iter().any(|l| l.eq_ignore_ascii_case(w)))
    };
    match expect {
        Expect::Any => true,
        Expect::Duration => states_duration(sentence) || has(&["immediately", "overnight"]),
        Expect::Frequency => has(FREQUENCY_WORDS) || states_duration(sentence),
        Expect::Quantity | Expect::Time => {
            sentence
                .chars()
                .any(|c| c.is_ascii_digit() || matches!(c, '$' | '€' | '£' | '%'))
                || has(NUMBER_WORDS)
                || (expect == Expect::Time && has(TIME_WORDS))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kind_from_the_opening_words() {
        for (q, e) in [
            ("How long until I get reimbursed?", Expect::Duration),
            (
                "If I ask finance for a new vendor, how quickly will they respond?",
                Expect::Duration,
            ),
            (
                "How often does the security rotation change hands?",
                Expect::Frequency,
            ),
            ("how many weeks of leave do I get", Expect::Quantity),
            (
                "What's the most medical leave I can take?",
                Expect::Quantity,
            ),
            ("When are paydays for US payroll?", Expect::Time),
            (
                "I just interviewed a candidate. By when should my feedback be in?",
                Expect::Time,
            ),
            ("Which day of the week is the no-meeting day?", Expect::Time),
            ("What do we use to write RFCs?", Expect::Any),
            ("Whenever I travel, who books the hotel?", Expect::Any),
            ("Wie lange dauert die Erstattung?", Expect::Any),
            ("Who leads technology as CTO?", Expect::Any),
        ] {
            assert_eq!(expected(q), e, "{q}");
        }
    }

    #[test]
    fn a_sentence_of_the_asked_kind_holds_a_number_or_a_time() {
        assert!(satisfies(
            Expect::Quantity,
            "Expect a 7-10 day turn around."
        ));
        assert!(satisfies(
            Expect::Quantity,
            "Pay is included in your monthly pay."
        ));
        assert!(satisfies(Expect::Quantity, "The stipend is $250 a year."));
        assert!(satisfies(Expect::Quantity, "Reviews happen twice a year."));
        assert!(!satisfies(
            Expect::Quantity,
            "Reimbursements are processed on Airbase."
        ));
        assert!(satisfies(
            Expect::Time,
            "Emails are created on the Wednesday before a new hire's start date."
        ));
        assert!(!satisfies(
            Expect::Time,
            "Paydays follow the payroll cycle."
        ));
        assert!(satisfies(Expect::Any, "Anything at all."));
    }

    #[test]
    fn a_duration_is_a_number_with_a_unit_of_time() {
        for yes in [
            "Expect a 7-10 day turn around on receiving reimbursements.",
            "30-minute Values interview: you meet with two people.",
            "Solved tickets move to closed after 48 business hours.",
            "The program typically lasts between 1-2 business days.",
            "We respond within 72h.",
            "Your onboarding is expected to take three months.",
            "Each rotation is a week long.",
            "Allow a couple of days for approval.",
        ] {
            assert!(satisfies(Expect::Duration, yes), "{yes}");
        }
        for no in [
            // A frequency word is not a length of time: the sentence answers "how often".
            "All expensed perks must be submitted via Airbase to be included in your monthly pay.",
            "Step 12: Schedule the First Day Prep email.",
            "We hired 3 new engineers each day of the offsite.",
            "Reimbursements are processed on Airbase.",
        ] {
            assert!(!satisfies(Expect::Duration, no), "{no}");
        }
        assert!(satisfies(
            Expect::Frequency,
            "The Security team has a dedicated member on a weekly support rotation."
        ));
        assert!(satisfies(Expect::Frequency, "It runs every 6 months."));
        assert!(!satisfies(
            Expect::Frequency,
            "The Security team has a dedicated member on the support rotation."
        ));
    }
}

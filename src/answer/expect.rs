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
    /// An amount, count, duration, rate or frequency ("how many", "how long", "how much").
    Quantity,
    /// A point or period in time ("when", "what time", "by when", "which day").
    Time,
    /// The wording does not say.
    Any,
}

const QUANTITY_OPENERS: &[&str] = &[
    "how many",
    "how much",
    "how long",
    "how often",
    "how old",
    "how big",
    "how large",
    "how far",
    "how soon",
    "how frequently",
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

/// Whether `sentence` can state an answer of kind `expect` (always for [`Expect::Any`]).
pub fn satisfies(expect: Expect, sentence: &str) -> bool {
    if expect == Expect::Any {
        return true;
    }
    if sentence
        .chars()
        .any(|c| c.is_ascii_digit() || matches!(c, '$' | '€' | '£' | '%'))
    {
        return true;
    }
    // Runs once per candidate sentence on the answer path: compare in place, no allocation.
    let has = |list: &[&str]| {
        sentence
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| list.iter().any(|l| l.eq_ignore_ascii_case(w)))
    };
    match expect {
        Expect::Quantity => has(NUMBER_WORDS),
        Expect::Time => has(NUMBER_WORDS) || has(TIME_WORDS),
        Expect::Any => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kind_from_the_opening_words() {
        for (q, e) in [
            ("How long until I get reimbursed?", Expect::Quantity),
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
}

//! Turning a raw e-mail (RFC 822 headers, blank line, body) into classifier input text.

/// The text of an e-mail for classification: the `Subject:` header line (with its folded
/// continuation lines) followed by the body, all whitespace collapsed to single spaces.
///
/// The headers end at the first blank line; every other header (routing, dates, ids) is
/// dropped. Text that does not start with a header line (`Name: value`, or an mbox
/// `From ` line) is taken to be all body. The body is kept as it is (no MIME decoding).
pub fn email_text(raw: &str) -> String {
    let mut lines = raw.lines();
    let mut subject = String::new();
    let mut body_lines: Vec<&str> = Vec::new();

    if raw.lines().next().is_some_and(is_header_start) {
        let mut in_subject = false;
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                break;
            }
            let continuation = line.starts_with([' ', '\t']);
            if continuation {
                if in_subject {
                    subject.push(' ');
                    subject.push_str(line);
                }
                continue;
            }
            in_subject = subject.is_empty()
                && line
                    .get(..8)
                    .is_some_and(|name| name.eq_ignore_ascii_case("subject:"));
            if in_subject {
                subject.push_str(line);
            }
        }
    }
    body_lines.extend(lines);

    let mut out = String::with_capacity(raw.len().min(1 << 16));
    let words = subject
        .split_whitespace()
        .chain(body_lines.iter().flat_map(|l| l.split_whitespace()));
    for word in words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Whether `line` looks like the first line of an e-mail header block.
fn is_header_start(line: &str) -> bool {
    if line.starts_with("From ") {
        return true;
    }
    match line.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_subject_and_body() {
        let raw = "From someone@example.com  Thu Aug 22 12:36:23 2002\r\n\
                   Return-Path: <x@example.com>\r\n\
                   Subject: Re: New   Sequences\r\n\
                   \twindow\r\n\
                   Received: from a\r\n\
                   \tby b\r\n\
                   \r\n\
                   Hello   there,\r\n\r\n  how are\tyou?\r\n\
                   Subject: not a header\r\n";
        assert_eq!(
            email_text(raw),
            "Subject: Re: New Sequences window Hello there, how are you? Subject: not a header"
        );
    }

    #[test]
    fn no_subject_gives_body_only() {
        assert_eq!(email_text("To: a@b\n\nbody  text\n"), "body text");
    }

    #[test]
    fn subject_is_case_insensitive() {
        assert_eq!(email_text("SUBJECT: hi\nX-A: 1\n\nyo"), "SUBJECT: hi yo");
    }

    #[test]
    fn text_without_headers_is_all_body() {
        assert_eq!(
            email_text("Just a note\nsecond line"),
            "Just a note second line"
        );
        assert_eq!(
            email_text("Dear friend: money!\n\nmore"),
            "Dear friend: money! more"
        );
    }

    #[test]
    fn headers_only_and_empty() {
        assert_eq!(email_text("Subject: only\nTo: x"), "Subject: only");
        assert_eq!(email_text(""), "");
    }
}

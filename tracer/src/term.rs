//! Text other users control, made safe for a terminal.
//!
//! memstall runs as root and prints strings that any process can choose: its comm (prctl
//! PR_SET_NAME takes any bytes), cgroup and pod names, kernel log text, symbol names. Printed
//! raw, `ESC [ 2 J` clears the on-call engineer's screen, `ESC ] 0 ;` retitles the window and a
//! newline forges a line of output. Every such string goes through [`escape`] on its way to a
//! terminal (human lines, tables, histograms, the live view, errors and notes); JSON, Prometheus
//! and HTML have their own escaping.
use std::fmt;

/// Displays `text` with every control character (C0, DEL, C1), every character that reorders
/// or breaks lines (bidi controls, U+2028/U+2029) and every byte that is not UTF-8 written as a
/// visible escape: `\x1b`, `\u{202e}`, `\xff`. Everything else, backslashes and quotes
/// included, passes unchanged, so `system-systemd\x2dfsck.slice` reads as systemd wrote it.
pub fn escape<T: AsRef<[u8]> + ?Sized>(text: &T) -> Escaped<'_> {
    Escaped(text.as_ref())
}

/// See [`escape`].
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a [u8]);

/// Characters a terminal or a reader acts on rather than shows.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padding and precision (`{:<16}` in tables) apply to the escaped text.
        if f.width().is_some() || f.precision().is_some() {
            return f.pad(&Escaped(self.0).to_string());
        }
        for chunk in self.0.utf8_chunks() {
            let valid = chunk.valid();
            let mut clean_from = 0;
            for (at, c) in valid.char_indices() {
                if !is_unsafe(c) {
                    continue;
                }
                f.write_str(&valid[clean_from..at])?;
                clean_from = at + c.len_utf8();
                match u32::from(c) {
                    code @ 0..=0x7f => write!(f, "\\x{code:02x}")?,
                    code => write!(f, "\\u{{{code:x}}}")?,
                }
            }
            f.write_str(&valid[clean_from..])?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An owned, escaped copy (for widgets and tables that want a `String`).
pub fn escaped<T: AsRef<[u8]> + ?Sized>(text: &T) -> String {
    escape(text).to_string()
}

/// Whether `text` would reach a terminal unchanged (no byte [`escape`] rewrites).
#[cfg(test)]
pub fn is_terminal_safe(text: &str) -> bool {
    !text.chars().any(is_unsafe)
}

/// One line on stderr, `memstall: ` first, escaped whole: errors, notes and progress carry
/// paths and names other users chose, and a line must stay one line.
pub fn say(message: impl fmt::Display) {
    eprintln!("memstall: {}", escape(&message.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(escaped("\x1b[2J\x1b]0;pwn\x07"), "\\x1b[2J\\x1b]0;pwn\\x07");
        assert_eq!(
            escaped("a\nb\rc\td\0e\x7f"),
            "a\\x0ab\\x0dc\\x09d\\x00e\\x7f"
        );
        // C1: U+009B is CSI on terminals that take 8-bit controls.
        assert_eq!(escaped("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(escaped("abc\u{202e}cba"), "abc\\u{202e}cba");
        assert_eq!(escaped("line\u{2028}break"), "line\\u{2028}break");
    }

    #[test]
    fn invalid_utf8_is_shown_byte_by_byte() {
        assert_eq!(escaped(b"ok\xff\xc3(\x9b"), "ok\\xff\\xc3(\\x9b");
    }

    #[test]
    fn ordinary_names_pass_unchanged() {
        for name in [
            "/kubepods/burstable/pod1234",
            "system-systemd\\x2dfsck.slice",
            "quote\"s and 'single'",
            "<b>bold</b> & more",
            "ünïcode 名前 🙂",
            "",
        ] {
            assert_eq!(escaped(name), name);
            assert!(is_terminal_safe(name));
        }
        assert!(!is_terminal_safe("a\x1bb"));
    }

    #[test]
    fn padding_applies_to_the_escaped_text() {
        assert_eq!(format!("[{:<8}]", escape("a\x1b")), "[a\\x1b   ]");
        assert_eq!(format!("[{:>6}]", escape("ab")), "[    ab]");
    }
}

//! The stylesheet's colours checked against WCAG AA (4.5:1 for normal text), in both colour schemes:
//! a palette edit that makes muted text or a badge unreadable fails a test instead of an audit.

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    const CSS: &str = include_str!("style.css");

    /// The `--name: #rrggbb` variables of the `:root` block starting at `from`.
    fn palette(from: usize) -> HashMap<String, (f64, f64, f64)> {
        let block = &CSS[from..];
        let block = &block[block.find('{').expect("a block") + 1..block.find('}').expect("closed")];
        block
            .split(';')
            .filter_map(|decl| {
                let (name, value) = decl.trim().split_once(':')?;
                let hex = value.trim().strip_prefix('#').filter(|h| h.len() == 6)?;
                let ch = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
                let rgb = (ch(0)?, ch(2)?, ch(4)?);
                Some((
                    name.trim().to_string(),
                    (rgb.0 as f64, rgb.1 as f64, rgb.2 as f64),
                ))
            })
            .collect()
    }

    fn luminance((r, g, b): (f64, f64, f64)) -> f64 {
        let lin = |c: f64| {
            let c = c / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    }

    fn ratio(a: (f64, f64, f64), b: (f64, f64, f64)) -> f64 {
        let (x, y) = (luminance(a), luminance(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    /// Text colour on background, as the stylesheet pairs them.
    const PAIRS: [(&str, &str); 16] = [
        ("--fg", "--bg"),
        ("--fg", "--card"),
        ("--fg", "--head"),
        ("--muted", "--bg"),
        ("--muted", "--card"),
        ("--muted", "--head"),
        ("--accent", "--bg"),
        ("--accent", "--card"),
        ("--accent", "--info-bg"),
        ("--ok", "--ok-bg"),
        ("--warn", "--warn-bg"),
        ("--bad", "--bad-bg"),
        ("--bad", "--card"),
        ("--card", "--accent"),
        ("--card", "--bad"),
        ("--bar-muted", "--bar"),
    ];

    #[test]
    fn every_text_colour_meets_aa_contrast_in_light_and_dark_mode() {
        let light = palette(CSS.find(":root {").expect("light palette"));
        let dark_at = CSS
            .find("prefers-color-scheme: dark")
            .expect("a dark scheme");
        let dark = palette(dark_at + CSS[dark_at..].find(":root {").expect("dark palette"));
        for (scheme, p) in [("light", &light), ("dark", &dark)] {
            for (fg, bg) in PAIRS {
                let (Some(f), Some(b)) = (p.get(fg), p.get(bg)) else {
                    panic!("{scheme}: {fg} or {bg} is not a #rrggbb variable");
                };
                let r = ratio(*f, *b);
                assert!(r >= 4.5, "{scheme}: {fg} on {bg} is {r:.2}:1");
            }
        }
    }
}

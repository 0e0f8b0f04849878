//! `--rules FILE`: per-layer control in TOML. The first rule whose `pattern`
//! (a regex) matches a weight's tensor name or node name decides its scheme and
//! parameters; `scheme = "keep"` leaves the weight alone.
//!
//! ```toml
//! [[rule]]
//! pattern = "^layer1\\."
//! scheme = "idinit"
//! tau = 0.5
//!
//! [[rule]]
//! pattern = "fc"
//! scheme = "keep"
//! ```

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::error::Error;
use crate::params::SchemeParams;

#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: Regex,
    /// A scheme name, `auto`, or `keep`.
    pub scheme: String,
    pub params: SchemeParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<toml::Table>,
}

impl Rule {
    pub fn matches(&self, tensor: &str, node: &str) -> bool {
        self.pattern.is_match(tensor) || self.pattern.is_match(node)
    }
}

/// Reads and checks a rules file: every pattern compiles and every scheme and
/// parameter is valid, so mistakes surface before any work is done.
pub fn load_rules(path: &Path) -> Result<Vec<Rule>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Rules {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_rules(&text).map_err(|reason| Error::Rules {
        path: path.to_path_buf(),
        reason,
    })
}

pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    // serde cannot deny unknown keys through `flatten`, so take `pattern` and
    // `scheme` out by hand and parse the remaining keys strictly as parameters.
    let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.rule
        .into_iter()
        .enumerate()
        .map(|(i, mut table)| {
            let n = i + 1;
            let mut take = |key: &str| match table.remove(key) {
                Some(toml::Value::String(s)) => Ok(s),
                Some(_) => Err(format!("rule {n}: '{key}' must be a string")),
                None => Err(format!("rule {n}: '{key}' is missing")),
            };
            let pattern = take("pattern")?;
            let scheme = take("scheme")?;
            let params: SchemeParams = toml::Value::Table(table)
                .try_into()
                .map_err(|e| format!("rule {n}: {e}"))?;
            let pattern =
                Regex::new(&pattern).map_err(|e| format!("rule {n}: pattern '{pattern}': {e}"))?;
            if scheme != "keep" && scheme != "auto" {
                params
                    .scheme(&scheme, true)
                    .map_err(|e| format!("rule {n}: {e}"))?;
            }
            Ok(Rule {
                pattern,
                scheme,
                params,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let rules = parse_rules(
            "[[rule]]\npattern = '^layer1'\nscheme = 'idinit'\ntau = 0.5\n\n[[rule]]\npattern = 'fc'\nscheme = 'keep'\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].params.values().get("tau"),
            Some(&reinit_schemes::ParamValue::Number(0.5))
        );
        assert!(rules[0].matches("layer1.0.conv1.weight", "/x"));
        assert!(!rules[0].matches("x.layer1", "/y"));
        assert!(rules[1].matches("w", "/fc/Gemm"));
    }

    #[test]
    fn bad_rules_are_rejected_with_their_number() {
        for bad in [
            "[[rule]]\npattern = '('\nscheme = 'he'\n",
            "[[rule]]\npattern = 'a'\nscheme = 'nope'\n",
            "[[rule]]\npattern = 'a'\nscheme = 'he'\ndensity = 0.1\n",
            "[[rule]]\npattern = 'a'\nscheme = 'eoi'\ndensty = 0.1\n",
        ] {
            assert!(parse_rules(bad).is_err(), "{bad}");
        }
    }
}

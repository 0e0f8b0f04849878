//! The scheme catalog (`reinit schemes`, Python `reinit.schemes()`): what each scheme
//! does, needs, takes, and where it comes from — all read from the scheme table
//! ([`reinit_schemes::SCHEMES`]), plus `auto`.

use reinit_schemes::{ParamDef, ParamKind, SCHEMES, SchemeDef};
use serde_json::{Value, json};

fn param_json(p: &ParamDef) -> Value {
    let mut v = json!({
        "name": p.name,
        "type": match p.kind {
            ParamKind::Number => "number",
            ParamKind::Flag => "bool",
            ParamKind::Choice(_) => "choice",
        },
        "default": p.default,
        "help": p.help,
    });
    if let ParamKind::Choice(choices) = p.kind {
        v["choices"] = json!(choices);
    }
    v
}

fn scheme_json(d: &SchemeDef) -> Value {
    json!({
        "name": d.name,
        "aliases": d.aliases,
        "summary": d.summary,
        "needs": d.needs,
        "params": d.params.iter().map(param_json).collect::<Vec<_>>(),
        "paper": d.paper,
        "draws_iid": d.draws_iid,
        "orthogonal": d.orthogonal,
    })
}

/// The catalog as `reinit schemes --json` prints it.
pub fn catalog() -> Value {
    let mut entries: Vec<Value> = SCHEMES.iter().map(|d| scheme_json(d)).collect();
    entries.push(json!({
        "name": "auto",
        "aliases": [],
        "summary": crate::auto::AUTO_SUMMARY,
        "needs": "the analysis",
        "params": [],
        "paper": "—",
        "draws_iid": false,
        "orthogonal": false,
    }));
    Value::Array(entries)
}

/// One parameter as the text catalog shows it.
fn param_line(p: &ParamDef) -> String {
    let value = match p.kind {
        ParamKind::Number => "X".to_string(),
        ParamKind::Flag => "true|false".to_string(),
        ParamKind::Choice(c) => c.join("|"),
    };
    format!("--{} {value}  {} (default: {})", p.name, p.help, p.default)
}

/// The catalog as `reinit schemes` prints it.
pub fn catalog_text() -> String {
    let mut out = String::new();
    for d in SCHEMES {
        out.push_str(&format!(
            "{}\n  {}\n  needs:  {}\n",
            d.name, d.summary, d.needs
        ));
        if d.params.is_empty() {
            out.push_str("  params: —\n");
        }
        for (i, p) in d.params.iter().enumerate() {
            let label = if i == 0 { "params:" } else { "       " };
            out.push_str(&format!("  {label} {}\n", param_line(p)));
        }
        out.push_str(&format!("  paper:  {}\n\n", d.paper));
    }
    out.push_str(&format!(
        "auto\n  {}\n  needs:  the analysis\n  params: any of the above, each applied where its scheme is chosen\n",
        crate::auto::AUTO_SUMMARY
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalog_lists_every_scheme_with_its_parameters() {
        let catalog = super::catalog();
        let entries = catalog.as_array().unwrap();
        let names: Vec<&str> = entries
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = reinit_schemes::scheme_names().collect();
        want.push("auto");
        assert_eq!(names, want);
        let eoi = entries.iter().find(|e| e["name"] == "eoi").unwrap();
        assert!(
            eoi["params"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "density")
        );
    }
}

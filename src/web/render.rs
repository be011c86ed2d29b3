//! Templates: parsed once at start. A file in `--templates-dir` replaces the built-in template
//! of the same name (or adds a new one that an override can include).

use std::path::Path;

use anyhow::Context;
use minijinja::Environment;
use serde::Serialize;

const BUILT_IN: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("home.html", include_str!("../../templates/home.html")),
    (
        "admin_login.html",
        include_str!("../../templates/admin_login.html"),
    ),
    ("admin.html", include_str!("../../templates/admin.html")),
    ("error.html", include_str!("../../templates/error.html")),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn load(override_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (name, source) in BUILT_IN {
            env.add_template(name, source)
                .with_context(|| format!("built-in template {name}"))?;
        }
        if let Some(dir) = override_dir {
            let entries =
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            for entry in entries {
                let path = entry
                    .with_context(|| format!("reading {}", dir.display()))?
                    .path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                if !path.is_file() || name.starts_with('.') {
                    continue;
                }
                let source = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                env.add_template_owned(name, source)
                    .with_context(|| format!("parsing {}", path.display()))?;
            }
        }
        let templates = Self { env };
        // Catch a broken override (bad syntax, a missing include) now rather than on a
        // visitor's request.
        for (name, _) in BUILT_IN {
            templates.render(name, minijinja::context! {})?;
        }
        Ok(templates)
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> anyhow::Result<String> {
        self.env
            .get_template(name)
            .and_then(|template| {
                template.render(minijinja::Value::from(minijinja::value::Serde(&context)))
            })
            .with_context(|| format!("rendering {name}"))
    }
}

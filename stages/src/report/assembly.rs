//! The `report` kind: `REPORT.md` from its `artifact` dependencies' sections, in a declared
//! order, under a provenance table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tofa_runner::BoxError;
use tofa_runner::kind::{StageContext, StageKind};

use super::{Artifact, InputsSummary};

/// `report` stage kind: `REPORT.md` from its `artifact` dependencies.
#[derive(Debug)]
pub struct Report;

/// Params of [`Report`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub title: String,
    /// Artifact name prefixes in the order their sections appear (ties and unlisted
    /// artifacts alphabetically, after the listed ones).
    #[serde(default)]
    pub order: Vec<String>,
}

impl StageKind for Report {
    type Params = ReportParams;
    const NAME: &'static str = "report";
    const VERSION: &'static str = "1";

    fn run(&self, p: &ReportParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        std::fs::create_dir_all(ctx.out("publish"))?;
        let mut sections: Vec<(String, String, f64)> = Vec::new();
        for d in ctx.deps_of::<Artifact>() {
            let pub_dir = d.dir.join("publish");
            let wall = InputsSummary::read(d)?.train_wall_s;
            for e in std::fs::read_dir(&pub_dir)? {
                let path = e?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if let Some(stem) = name.strip_suffix(".md") {
                    sections.push((stem.to_string(), std::fs::read_to_string(&path)?, wall));
                } else {
                    std::fs::copy(&path, ctx.out("publish").join(&name))?;
                }
            }
        }
        let pos = |n: &str| {
            p.order
                .iter()
                .position(|o| n.starts_with(o.as_str()))
                .unwrap_or(usize::MAX)
        };
        sections.sort_by(|a, b| (pos(&a.0), &a.0).cmp(&(pos(&b.0), &b.0)));
        let mut md = format!("# {}\n\n", p.title);
        let _ = writeln!(md, "| provenance | |\n|---|---|");
        let _ = writeln!(md, "| profile | `{}` |", ctx.profile);
        let _ = writeln!(
            md,
            "| commit | `{}` |",
            ctx.git_commit
                .as_deref()
                .map_or("unknown", |c| &c[..c.len().min(7)])
        );
        let _ = writeln!(
            md,
            "| machine | {} ({} logical CPUs), candle CPU backend, {} thread(s) per stage |",
            tofa_select::device::machine().cpu_model,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            ctx.threads
        );
        let _ = writeln!(md, "| sections | {} |", sections.len());
        md.push_str(
            "\nEvery number below was produced by `tofa-pipeline run` with this profile; per-stage \
             wall times are in each stage's cache manifest (`tofa-pipeline show <stage>`).\n\n",
        );
        md.push_str("Contents: ");
        md.push_str(
            &sections
                .iter()
                .map(|(n, _, _)| format!("[{n}](#{n})"))
                .collect::<Vec<_>>()
                .join(" · "),
        );
        md.push_str("\n\n");
        for (name, body, wall) in &sections {
            let _ = writeln!(md, "<a id=\"{name}\"></a>\n");
            md.push_str(body);
            if *wall > 0.0 {
                let _ = writeln!(
                    md,
                    "\n_Training wall time behind this section: {wall:.0} s._\n"
                );
            } else {
                md.push('\n');
            }
        }
        crate::write(&ctx.out("publish/REPORT.md"), md)?;
        Ok(())
    }
}

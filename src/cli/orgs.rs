//! Rows recorded in another Fly org (cutover gap): the old edge function wrote
//! `fly_org_slug = FLY_ORG_SLUG or 'personal'`, and the controller skips rows of any org but its own,
//! so those users silently get no app. `status` and `reconcile --dry-run` say so plainly.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Rows by recorded org (soft-deleted ones too: a re-upgrade reuses the row, org included) (an empty or missing org counts as the configured one, as the planner
/// treats it).
pub fn count_by_org<'a>(
    orgs: impl Iterator<Item = Option<&'a str>>,
    configured: Option<&str>,
) -> BTreeMap<String, usize> {
    let mut by_org = BTreeMap::new();
    for org in orgs {
        let org = match org.map(str::trim).filter(|o| !o.is_empty()) {
            Some(o) => o.to_string(),
            None => configured.unwrap_or("(unset)").to_string(),
        };
        *by_org.entry(org).or_insert(0) += 1;
    }
    by_org
}

/// What an operator must know and do about rows outside `configured`; empty when there are none.
/// Without a configured org (`status` with only `DATABASE_URL`), only a mix of orgs is reported.
pub fn advice(by_org: &BTreeMap<String, usize>, configured: Option<&str>) -> String {
    let mut out = String::new();
    let Some(ours) = configured else {
        if by_org.len() > 1 {
            let list: Vec<String> = by_org.iter().map(|(o, n)| format!("{o}: {n}")).collect();
            let _ = writeln!(
                out,
                "NOTE rows are recorded in {} Fly orgs ({}); vyx-fleet acts only on rows in \
                 FLY_ORG_SLUG and skips the others (set FLY_ORG_SLUG to see what to do)",
                by_org.len(),
                list.join(", ")
            );
        }
        return out;
    };
    for (org, n) in by_org.iter().filter(|(o, _)| o.as_str() != ours) {
        let _ = writeln!(
            out,
            "NOTE {n} row(s) are recorded in Fly org '{org}', not FLY_ORG_SLUG '{ours}': \
             vyx-fleet skips them, so those users get no app and nothing there is changed.\n     \
             If their apps live in '{org}', run vyx-fleet with FLY_ORG_SLUG={org}.\n     \
             If they belong in '{ours}' (the old edge function wrote 'personal' when its \
             FLY_ORG_SLUG was unset), re-point the rows:\n       \
             UPDATE public.user_fly_apps SET fly_org_slug = '{ours}' \
             WHERE fly_org_slug = '{org}' AND deleted_at IS NULL;\n     \
             (an app that really exists in '{org}' is then re-created in '{ours}' under a new name; \
             delete the old one in '{org}' by hand)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_in_another_org_are_counted_and_the_fix_is_spelled_out() {
        let rows = [
            Some("vyx"),
            Some("personal"),
            None,
            Some("personal"),
            Some(""),
        ];
        let by_org = count_by_org(rows.into_iter(), Some("vyx"));
        assert_eq!(by_org["vyx"], 3);
        assert_eq!(by_org["personal"], 2);
        let text = advice(&by_org, Some("vyx"));
        assert!(
            text.contains("2 row(s) are recorded in Fly org 'personal'"),
            "{text}"
        );
        assert!(text.contains("FLY_ORG_SLUG=personal"), "{text}");
        assert!(text.contains("SET fly_org_slug = 'vyx' WHERE fly_org_slug = 'personal'"));
        assert_eq!(
            advice(
                &count_by_org([Some("vyx")].into_iter(), Some("vyx")),
                Some("vyx")
            ),
            ""
        );
    }

    #[test]
    fn without_a_configured_org_a_mix_of_orgs_is_still_reported() {
        let by_org = count_by_org([Some("vyx"), Some("personal")].into_iter(), None);
        let text = advice(&by_org, None);
        assert!(text.contains("2 Fly orgs (personal: 1, vyx: 1)"), "{text}");
    }
}

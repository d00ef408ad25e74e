//! The Docker token scope grammar: `type:name:action[,action...]`, e.g.
//! `repository:team/app:pull,push` or `registry:catalog:*`. The name may itself hold colons
//! only in theory (repository names cannot), so the type ends at the first colon and the
//! actions start after the last.

/// One requested (or granted) scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `repository` or `registry` (a `(class)` suffix such as `repository(plugin)` is dropped).
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {0:?} is not type:name:actions")]
pub struct ScopeError(pub String);

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let error = || ScopeError(text.chars().take(200).collect());
        let (resource_type, rest) = text.split_once(':').ok_or_else(error)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(error)?;
        let resource_type = resource_type
            .split_once('(')
            .map_or(resource_type, |(base, _)| base);
        if resource_type.is_empty() || name.is_empty() {
            return Err(error());
        }
        Ok(Scope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|action| !action.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Every scope in a list of `scope` values, each of which may hold several separated by
    /// spaces (the OAuth2 form). Malformed ones are skipped: a token server grants what it can.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(|text| Scope::parse(text).ok())
            .collect()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name,
            self.actions.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_and_registry_scopes() {
        let scope = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(scope.resource_type, "repository");
        assert_eq!(scope.name, "team/app");
        assert_eq!(scope.actions, ["pull", "push"]);
        assert_eq!(scope.to_string(), "repository:team/app:pull,push");
        let catalog = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(
            (catalog.name.as_str(), catalog.actions[0].as_str()),
            ("catalog", "*")
        );
        let plugin = Scope::parse("repository(plugin):x:pull").unwrap();
        assert_eq!(plugin.resource_type, "repository");
    }

    #[test]
    fn malformed_scopes_are_errors_or_skipped() {
        for bad in [
            "",
            "repository",
            "repository:name",
            ":a:pull",
            "repository::pull",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        let all = Scope::parse_all([
            "repository:a:pull repository:b:push",
            "junk",
            "registry:catalog:*",
        ]);
        assert_eq!(all.len(), 3);
    }
}

//! The crate as the compiler reads it, for the rules in `architecture.rs`: the module tree
//! followed from the crate root through `mod` declarations (`x.rs`, `x/mod.rs`, `#[path]`,
//! inline modules), every module's and block's names (items, `use` bindings with aliases, groups
//! and globs), and every path named outside `#[cfg(test)]`, resolved to the item it means
//! through `self`, `super`, `crate` and `pub use` re-exports. Macro arguments and `macro_rules!`
//! bodies are tokens, so the paths among them are found by scanning.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use syn::buffer::{Cursor, TokenBuffer};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Item, Meta, Token, UseTree};

use super::Offence;

/// A crate's sources by path relative to the package root (`src/lib.rs`, ...).
pub(super) type Sources = BTreeMap<PathBuf, String>;

type ScopeId = usize;

/// A path as written: `::a::b` (global), `crate::a`, `super::a`, `a::b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RawPath {
    global: bool,
    segments: Vec<String>,
}

impl RawPath {
    fn of(path: &syn::Path) -> Self {
        RawPath {
            global: path.leading_colon.is_some(),
            segments: path.segments.iter().map(|s| s.ident.to_string()).collect(),
        }
    }

    fn join(&self, name: &str) -> Self {
        let mut joined = self.clone();
        joined.segments.push(name.to_owned());
        joined
    }
}

impl fmt::Display for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.global {
            f.write_str("::")?;
        }
        f.write_str(&self.segments.join("::"))
    }
}

/// A module's namespace, or a block's (a function body may hold `use` items and items of its
/// own, seen before the module's).
#[derive(Debug, Default)]
struct Scope {
    module: usize,
    /// The enclosing block's scope, or the module's; `None` for a module's own scope.
    parent: Option<ScopeId>,
    /// Names defined here other than by `use` (a module's child modules included).
    items: BTreeSet<String>,
    /// What each `use` binds, by the name it binds: alternatives under different `cfg`s may
    /// bind one name twice, and both are followed.
    imports: BTreeMap<String, Vec<RawPath>>,
    globs: Vec<RawPath>,
}

#[derive(Debug)]
pub(super) struct Module {
    /// From the crate root, e.g. `["upstream", "sessions"]`; empty for the root.
    pub(super) path: Vec<String>,
    file: PathBuf,
    children: BTreeMap<String, usize>,
    scope: ScopeId,
}

/// Where in the code a path is named, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Anywhere else: a `use`, an expression, a pattern, a type in a body or a field.
    Plain,
    /// In a return type, a type alias or an associated type.
    Signature,
    /// The path of a struct literal (`Path { .. }`).
    StructLiteral,
    /// The type in `<Type>::f` or `<Type as Trait>::f`.
    QualifiedSelf,
}

#[derive(Debug)]
pub(super) struct Reference {
    scope: ScopeId,
    path: RawPath,
    pub(super) kind: Kind,
    /// The items around it (`impl Gateway / fn serve_call`), for the message.
    context: String,
}

/// Where a path leads: the absolute path (`crate` or an external crate's name first), and the
/// top-level modules of this crate it went through on the way (a re-export's included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Resolved {
    pub(super) path: Vec<String>,
    pub(super) via: BTreeSet<String>,
}

impl Resolved {
    fn external(path: Vec<String>) -> Self {
        Resolved {
            path,
            via: BTreeSet::new(),
        }
    }

    fn extended(&self, rest: &[String]) -> Vec<String> {
        let mut path = self.path.clone();
        path.extend_from_slice(rest);
        path
    }
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join("::"))
    }
}

/// Far beyond any real chain of re-exports; a guard against `use` loops.
pub(super) const MAX_DEPTH: usize = 32;

#[derive(Debug, Default)]
pub(super) struct Crate {
    pub(super) modules: Vec<Module>,
    scopes: Vec<Scope>,
    pub(super) references: Vec<Reference>,
    /// What each reference resolves to (several when `cfg` alternatives differ).
    pub(super) resolved: Vec<Vec<Resolved>>,
    /// Type aliases by absolute path, with the references of their definitions.
    pub(super) aliases: BTreeMap<Vec<String>, Vec<usize>>,
    /// The files read, and those of test-only modules left unread.
    pub(super) files: BTreeSet<PathBuf>,
    pub(super) test_files: BTreeSet<PathBuf>,
}

/// The name the binary uses for the library crate.
const LIBRARY_NAME: &str = "datashare_gateway";

impl Crate {
    /// Parses the crate rooted at `src/lib.rs`, and `src/main.rs` if present: the binary is
    /// checked as one more top-level module, `main`, whose `datashare_gateway::` paths are the
    /// library's.
    pub(super) fn parse(sources: &Sources) -> Result<Crate, String> {
        let mut loader = Loader {
            sources,
            krate: Crate::default(),
        };
        loader.load_file(Vec::new(), Path::new("src/lib.rs"), true)?;
        let main = Path::new("src/main.rs");
        if sources.contains_key(main) {
            let module = loader.load_file(vec!["main".into()], main, true)?;
            let scope = loader.krate.modules[module].scope;
            loader.krate.scopes[scope].imports.insert(
                LIBRARY_NAME.into(),
                vec![RawPath {
                    global: false,
                    segments: vec!["crate".into()],
                }],
            );
        }
        let mut krate = loader.krate;
        krate.resolved = krate
            .references
            .iter()
            .map(|reference| krate.resolve(reference.scope, &reference.path))
            .collect();
        Ok(krate)
    }

    fn new_scope(&mut self, module: usize, parent: Option<ScopeId>) -> ScopeId {
        self.scopes.push(Scope {
            module,
            parent,
            ..Scope::default()
        });
        self.scopes.len() - 1
    }

    /// The top-level module a reference sits in (`""` for the crate root).
    pub(super) fn top_module_of(&self, reference: &Reference) -> &str {
        let module = &self.modules[self.scopes[reference.scope].module];
        module.path.first().map_or("", String::as_str)
    }

    pub(super) fn offence(&self, index: usize, means: String) -> Offence {
        let reference = &self.references[index];
        let module = &self.modules[self.scopes[reference.scope].module];
        let mut name = vec!["crate"];
        name.extend(module.path.iter().map(String::as_str));
        Offence {
            file: module.file.clone(),
            module: name.join("::"),
            context: reference.context.clone(),
            written: reference.path.to_string(),
            means,
        }
    }

    /// Every resolution of every reference, with the reference's index.
    pub(super) fn resolutions(&self) -> impl Iterator<Item = (usize, &Resolved)> {
        self.resolved
            .iter()
            .enumerate()
            .flat_map(|(index, all)| all.iter().map(move |r| (index, r)))
    }
}

struct Loader<'s> {
    sources: &'s Sources,
    krate: Crate,
}

impl Loader<'_> {
    /// Loads the module written in `file`; `mod_rs` when it is a crate root, a `mod.rs` or a
    /// file named by `#[path]` (its child modules then live beside it, not in a directory named
    /// after it).
    fn load_file(&mut self, path: Vec<String>, file: &Path, mod_rs: bool) -> Result<usize, String> {
        let text = self
            .sources
            .get(file)
            .ok_or_else(|| format!("{}: no such file (module {:?})", file.display(), path))?;
        let parsed =
            syn::parse_file(text).map_err(|e| format!("{}: cannot parse: {e}", file.display()))?;
        self.krate.files.insert(file.to_owned());
        let parent = file.parent().unwrap_or(Path::new(""));
        let dir = if mod_rs {
            parent.to_owned()
        } else {
            let stem = file.file_stem().unwrap_or_default();
            parent.join(stem)
        };
        let base = parent.to_owned();
        self.load_module(path, file, &dir, &base, &parsed.items)
    }

    /// Registers a module's names, loads its children, then collects the paths it names.
    /// `dir` is where its `mod x;` files are, `path_base` what its `#[path]`s are relative to.
    fn load_module(
        &mut self,
        path: Vec<String>,
        file: &Path,
        dir: &Path,
        path_base: &Path,
        items: &[Item],
    ) -> Result<usize, String> {
        let index = self.krate.modules.len();
        let scope = self.krate.new_scope(index, None);
        self.krate.modules.push(Module {
            path: path.clone(),
            file: file.to_owned(),
            children: BTreeMap::new(),
            scope,
        });
        register(&mut self.krate.scopes[scope], items.iter());
        for item in items {
            let Item::Mod(declared) = item else { continue };
            let name = declared.ident.to_string();
            let mut child_path = path.clone();
            child_path.push(name.clone());
            let path_attr = path_attribute(&declared.attrs);
            if is_test(&declared.attrs) {
                if declared.content.is_none() {
                    for candidate in module_files(dir, path_base, &name, path_attr.as_deref()) {
                        self.krate.test_files.insert(candidate.0);
                    }
                }
                continue;
            }
            let child = match &declared.content {
                Some((_, content)) => {
                    // An inline module's files live in a directory named after it, and its
                    // `#[path]`s are relative to that directory too.
                    let inner = match &path_attr {
                        Some(p) => normalize(&path_base.join(p)),
                        None => dir.join(&name),
                    };
                    self.load_module(child_path, file, &inner, &inner, content)?
                }
                None => {
                    let candidates = module_files(dir, path_base, &name, path_attr.as_deref());
                    let found = candidates
                        .iter()
                        .find(|(candidate, _)| self.sources.contains_key(candidate));
                    let Some((found, mod_rs)) = found else {
                        return Err(format!(
                            "{}: `mod {name};` but none of {:?} exists",
                            file.display(),
                            candidates.iter().map(|c| &c.0).collect::<Vec<_>>()
                        ));
                    };
                    self.load_file(child_path, found, *mod_rs)?
                }
            };
            self.krate.modules[index].children.insert(name, child);
        }
        let mut collector = Collector::new(&mut self.krate, scope);
        for item in items {
            if !matches!(item, Item::Mod(_)) {
                collector.visit_item(item);
            }
        }
        Ok(index)
    }
}

/// The files `mod name;` may be written in, each with whether it counts as a `mod.rs`.
fn module_files(
    dir: &Path,
    path_base: &Path,
    name: &str,
    path_attr: Option<&str>,
) -> Vec<(PathBuf, bool)> {
    match path_attr {
        Some(p) => vec![(normalize(&path_base.join(p)), true)],
        None => vec![
            (dir.join(format!("{name}.rs")), false),
            (dir.join(name).join("mod.rs"), true),
        ],
    }
}

/// `a/b/../c` as `a/c`, without touching the file system (the sources may be in memory).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn path_attribute(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// True when the attributes hold a `cfg` that only test builds satisfy (`test`, or `all(..)`
/// with `test` in it, or `any(..)` of only such): code under `not(test)` or a feature is
/// compiled in some non-test build, so it is checked.
fn is_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg") && attr.parse_args::<Meta>().is_ok_and(|m| requires_test(&m))
    })
}

fn requires_test(meta: &Meta) -> bool {
    match meta {
        Meta::Path(p) => p.is_ident("test"),
        Meta::List(list) => {
            let Ok(inner) = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            else {
                return false;
            };
            if list.path.is_ident("all") {
                inner.iter().any(requires_test)
            } else if list.path.is_ident("any") {
                !inner.is_empty() && inner.iter().all(requires_test)
            } else {
                false
            }
        }
        Meta::NameValue(_) => false,
    }
}

fn attrs_of(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The name an item defines, if any (`use` and `extern crate` bind names through imports).
fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Macro(i) => i.ident.as_ref()?,
        Item::Mod(i) => &i.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// Adds the names the non-test `items` define or import to `scope`.
fn register<'a>(scope: &mut Scope, items: impl Iterator<Item = &'a Item>) {
    for item in items.filter(|item| !is_test(attrs_of(item))) {
        match item {
            Item::Use(used) => {
                for leaf in use_leaves(used) {
                    match leaf {
                        UseLeaf::Bind { name, .. } if name == "_" => {}
                        UseLeaf::Bind { name, path } => {
                            scope.imports.entry(name).or_default().push(path);
                        }
                        UseLeaf::Glob(path) => scope.globs.push(path),
                    }
                }
            }
            Item::ExternCrate(extern_crate) => {
                let name = extern_crate
                    .rename
                    .as_ref()
                    .map_or(&extern_crate.ident, |(_, rename)| rename)
                    .to_string();
                let target = if extern_crate.ident == "self" {
                    RawPath {
                        global: false,
                        segments: vec!["crate".into()],
                    }
                } else {
                    RawPath {
                        global: true,
                        segments: vec![extern_crate.ident.to_string()],
                    }
                };
                scope.imports.entry(name).or_default().push(target);
            }
            Item::ForeignMod(foreign) => {
                for foreign_item in &foreign.items {
                    let ident = match foreign_item {
                        syn::ForeignItem::Fn(f) => &f.sig.ident,
                        syn::ForeignItem::Static(s) => &s.ident,
                        syn::ForeignItem::Type(t) => &t.ident,
                        _ => continue,
                    };
                    scope.items.insert(ident.to_string());
                }
            }
            other => {
                if let Some(name) = item_name(other) {
                    scope.items.insert(name);
                }
            }
        }
    }
}

/// One leaf of a `use` tree.
#[derive(Debug)]
enum UseLeaf {
    /// `a::b` binding `b`, `a::b as c` binding `c`, `a::{self}` binding `a`.
    Bind { name: String, path: RawPath },
    /// `a::*`: the path of what is globbed.
    Glob(RawPath),
}

impl UseLeaf {
    fn path(&self) -> &RawPath {
        match self {
            UseLeaf::Bind { path, .. } | UseLeaf::Glob(path) => path,
        }
    }
}

fn use_leaves(used: &syn::ItemUse) -> Vec<UseLeaf> {
    fn walk(prefix: RawPath, tree: &UseTree, out: &mut Vec<UseLeaf>) {
        match tree {
            UseTree::Path(p) => walk(prefix.join(&p.ident.to_string()), &p.tree, out),
            UseTree::Name(n) if n.ident == "self" => {
                if let Some(name) = prefix.segments.last() {
                    out.push(UseLeaf::Bind {
                        name: name.clone(),
                        path: prefix.clone(),
                    });
                }
            }
            UseTree::Name(n) => out.push(UseLeaf::Bind {
                name: n.ident.to_string(),
                path: prefix.join(&n.ident.to_string()),
            }),
            UseTree::Rename(r) => out.push(UseLeaf::Bind {
                name: r.rename.to_string(),
                path: if r.ident == "self" {
                    prefix
                } else {
                    prefix.join(&r.ident.to_string())
                },
            }),
            UseTree::Glob(_) => out.push(UseLeaf::Glob(prefix)),
            UseTree::Group(g) => {
                for tree in &g.items {
                    walk(prefix.clone(), tree, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    let root = RawPath {
        global: used.leading_colon.is_some(),
        segments: Vec::new(),
    };
    walk(root, &used.tree, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Collecting the paths the code names.

/// Walks one module's items (or a block's), recording every path named outside test code.
struct Collector<'k> {
    krate: &'k mut Crate,
    scope: ScopeId,
    kind: Kind,
    context: Vec<String>,
    /// The type alias being defined, whose references are also kept under its name.
    alias: Option<Vec<String>>,
    blocks: usize,
}

impl<'k> Collector<'k> {
    fn new(krate: &'k mut Crate, scope: ScopeId) -> Self {
        Collector {
            krate,
            scope,
            kind: Kind::Plain,
            context: Vec::new(),
            alias: None,
            blocks: 0,
        }
    }

    fn record(&mut self, path: RawPath, kind: Kind) {
        let index = self.krate.references.len();
        self.krate.references.push(Reference {
            scope: self.scope,
            path,
            kind,
            context: self.context.join(" / "),
        });
        if let Some(alias) = &self.alias {
            self.krate
                .aliases
                .entry(alias.clone())
                .or_default()
                .push(index);
        }
    }

    /// Records `path` and visits the paths in its generic arguments.
    fn record_path(&mut self, path: &syn::Path, kind: Kind) {
        self.record(RawPath::of(path), kind);
        for segment in &path.segments {
            self.visit_path_arguments(&segment.arguments);
        }
    }

    fn with_kind(&mut self, kind: Kind, f: impl FnOnce(&mut Self)) {
        let saved = std::mem::replace(&mut self.kind, kind);
        f(self);
        self.kind = saved;
    }

    fn within(&mut self, label: String, f: impl FnOnce(&mut Self)) {
        self.context.push(label);
        f(self);
        self.context.pop();
    }

    fn module_path(&self) -> Vec<String> {
        let module = &self.krate.modules[self.krate.scopes[self.scope].module];
        let mut path = vec!["crate".to_owned()];
        path.extend(module.path.iter().cloned());
        path
    }

    /// A `mod` inside a function body: its own scope, checked with its function.
    fn block_module(&mut self, declared: &syn::ItemMod) {
        let Some((_, content)) = &declared.content else {
            return;
        };
        let module = self.krate.scopes[self.scope].module;
        let scope = self.krate.new_scope(module, None);
        register(&mut self.krate.scopes[scope], content.iter());
        let saved = std::mem::replace(&mut self.scope, scope);
        self.within(format!("mod {}", declared.ident), |c| {
            for item in content {
                c.visit_item(item);
            }
        });
        self.scope = saved;
    }
}

fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map_or_else(String::new, |s| s.ident.to_string()),
        syn::Type::Reference(r) => type_name(&r.elem),
        _ => "_".into(),
    }
}

fn item_label(item: &Item) -> String {
    match item {
        Item::Impl(imp) => match &imp.trait_ {
            Some((_, path, _)) => format!(
                "impl {} for {}",
                path.segments
                    .last()
                    .map_or_else(String::new, |s| s.ident.to_string()),
                type_name(&imp.self_ty)
            ),
            None => format!("impl {}", type_name(&imp.self_ty)),
        },
        Item::Use(_) => "use".into(),
        Item::Fn(f) => format!("fn {}", f.sig.ident),
        other => {
            let kind = match other {
                Item::Const(_) => "const",
                Item::Enum(_) => "enum",
                Item::Macro(_) => "macro",
                Item::Static(_) => "static",
                Item::Struct(_) => "struct",
                Item::Trait(_) | Item::TraitAlias(_) => "trait",
                Item::Type(_) => "type",
                Item::Union(_) => "union",
                _ => "item",
            };
            format!("{kind} {}", item_name(other).unwrap_or_default())
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    // Attributes name derive macros, lints and `cfg`s, none of which is a dependency the rules
    // are about (and `#[serde(with = "..")]` paths are strings).
    fn visit_attribute(&mut self, _: &'ast Attribute) {}

    fn visit_item(&mut self, item: &'ast Item) {
        if is_test(attrs_of(item)) {
            return;
        }
        if let Item::Mod(declared) = item {
            // A module's own file or inline body is loaded as a module of its own.
            if self.blocks > 0 {
                self.block_module(declared);
            }
            return;
        }
        self.within(item_label(item), |c| visit::visit_item(c, item));
    }

    fn visit_item_use(&mut self, used: &'ast syn::ItemUse) {
        for leaf in use_leaves(used) {
            self.record(leaf.path().clone(), Kind::Plain);
        }
    }

    fn visit_item_type(&mut self, alias: &'ast syn::ItemType) {
        let mut name = self.module_path();
        name.push(alias.ident.to_string());
        let saved = self.alias.replace(name);
        self.with_kind(Kind::Signature, |c| visit::visit_item_type(c, alias));
        self.alias = saved;
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let (attrs, label) = match item {
            syn::ImplItem::Fn(f) => (&f.attrs, format!("fn {}", f.sig.ident)),
            syn::ImplItem::Const(c) => (&c.attrs, format!("const {}", c.ident)),
            syn::ImplItem::Type(t) => (&t.attrs, format!("type {}", t.ident)),
            syn::ImplItem::Macro(m) => (&m.attrs, "macro".into()),
            _ => return visit::visit_impl_item(self, item),
        };
        if !is_test(attrs) {
            self.within(label, |c| visit::visit_impl_item(c, item));
        }
    }

    fn visit_impl_item_type(&mut self, item: &'ast syn::ImplItemType) {
        self.with_kind(Kind::Signature, |c| visit::visit_impl_item_type(c, item));
    }

    fn visit_trait_item(&mut self, item: &'ast syn::TraitItem) {
        let (attrs, label) = match item {
            syn::TraitItem::Fn(f) => (&f.attrs, format!("fn {}", f.sig.ident)),
            syn::TraitItem::Const(c) => (&c.attrs, format!("const {}", c.ident)),
            syn::TraitItem::Type(t) => (&t.attrs, format!("type {}", t.ident)),
            syn::TraitItem::Macro(m) => (&m.attrs, "macro".into()),
            _ => return visit::visit_trait_item(self, item),
        };
        if !is_test(attrs) {
            self.within(label, |c| visit::visit_trait_item(c, item));
        }
    }

    fn visit_return_type(&mut self, ret: &'ast syn::ReturnType) {
        self.with_kind(Kind::Signature, |c| visit::visit_return_type(c, ret));
    }

    fn visit_field(&mut self, field: &'ast syn::Field) {
        if !is_test(&field.attrs) {
            visit::visit_field(self, field);
        }
    }

    fn visit_variant(&mut self, variant: &'ast syn::Variant) {
        if !is_test(&variant.attrs) {
            visit::visit_variant(self, variant);
        }
    }

    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if !is_test(&arm.attrs) {
            visit::visit_arm(self, arm);
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if !is_test(&local.attrs) {
            visit::visit_local(self, local);
        }
    }

    fn visit_field_value(&mut self, field: &'ast syn::FieldValue) {
        if !is_test(&field.attrs) {
            visit::visit_field_value(self, field);
        }
    }

    fn visit_stmt(&mut self, stmt: &'ast syn::Stmt) {
        if let syn::Stmt::Macro(m) = stmt
            && is_test(&m.attrs)
        {
            return;
        }
        visit::visit_stmt(self, stmt);
    }

    fn visit_block(&mut self, block: &'ast syn::Block) {
        let module = self.krate.scopes[self.scope].module;
        let scope = self.krate.new_scope(module, Some(self.scope));
        let items = block.stmts.iter().filter_map(|stmt| match stmt {
            syn::Stmt::Item(item) => Some(item),
            _ => None,
        });
        register(&mut self.krate.scopes[scope], items);
        let saved = std::mem::replace(&mut self.scope, scope);
        self.blocks += 1;
        visit::visit_block(self, block);
        self.blocks -= 1;
        self.scope = saved;
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record_path(path, self.kind);
    }

    fn visit_expr_path(&mut self, expr: &'ast syn::ExprPath) {
        if let Some(qself) = &expr.qself {
            match &*qself.ty {
                syn::Type::Path(ty) if ty.qself.is_none() => {
                    self.record_path(&ty.path, Kind::QualifiedSelf);
                }
                other => self.visit_type(other),
            }
        }
        self.visit_path(&expr.path);
    }

    fn visit_expr_struct(&mut self, expr: &'ast syn::ExprStruct) {
        if let Some(qself) = &expr.qself {
            self.visit_type(&qself.ty);
        }
        self.record_path(&expr.path, Kind::StructLiteral);
        for field in &expr.fields {
            self.visit_field_value(field);
        }
        if let Some(rest) = &expr.rest {
            self.visit_expr(rest);
        }
    }

    // A macro's arguments are tokens, not syntax: the paths among them are found by scanning
    // (`format!("{}", tonic::Status::internal(..))` names what it names). A `macro_rules!`
    // body is scanned the same way, `$crate::` included.
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.record_path(&mac.path, Kind::Plain);
        let buffer = TokenBuffer::new2(mac.tokens.clone());
        let mut found = Vec::new();
        scan_tokens(buffer.begin(), &mut found);
        for path in found {
            self.record(path, Kind::Plain);
        }
    }
}

/// The paths (`a::b::c`, `::a::b`, `$crate::a`) among tokens, groups included.
fn scan_tokens(mut cursor: Cursor<'_>, out: &mut Vec<RawPath>) {
    while !cursor.eof() {
        if let Some((inside, _, _, next)) = cursor.any_group() {
            scan_tokens(inside, out);
            cursor = next;
            continue;
        }
        if let Some((dollar, next)) = cursor.punct()
            && dollar.as_char() == '$'
            && let Some((name, after)) = next.ident()
            && name != "crate"
        {
            // A macro variable, `$name`.
            cursor = after;
            continue;
        }
        if let Some((path, next)) = path_at(cursor) {
            out.push(path);
            cursor = next;
            continue;
        }
        match cursor.token_tree() {
            Some((_, next)) => cursor = next,
            None => break,
        }
    }
}

fn double_colon(cursor: Cursor<'_>) -> Option<Cursor<'_>> {
    let (first, cursor) = cursor.punct()?;
    let (second, cursor) = cursor.punct()?;
    (first.as_char() == ':' && second.as_char() == ':').then_some(cursor)
}

fn path_at(cursor: Cursor<'_>) -> Option<(RawPath, Cursor<'_>)> {
    let (global, cursor) = match double_colon(cursor) {
        Some(next) => (true, next),
        None => (false, cursor),
    };
    let cursor = match cursor.punct() {
        Some((dollar, next)) if dollar.as_char() == '$' => next,
        _ => cursor,
    };
    let (first, mut cursor) = cursor.ident()?;
    let mut segments = vec![first.to_string()];
    while let Some(next) = double_colon(cursor)
        && let Some((segment, after)) = next.ident()
    {
        segments.push(segment.to_string());
        cursor = after;
    }
    Some((RawPath { global, segments }, cursor))
}

// ---------------------------------------------------------------------------------------------
// Resolving a path to what it means.

impl Crate {
    fn resolve(&self, scope: ScopeId, raw: &RawPath) -> Vec<Resolved> {
        self.resolve_in(scope, raw, Lookup::Expression, 0)
    }

    /// `raw` as written in `scope`. The first segment is looked up as the compiler does (Rust
    /// 2018 paths): `crate`, `self`, `super`; then the names of each scope from the innermost
    /// out, explicit ones before globs; else an external crate.
    fn resolve_in(
        &self,
        scope: ScopeId,
        raw: &RawPath,
        lookup: Lookup<'_>,
        depth: usize,
    ) -> Vec<Resolved> {
        if depth > MAX_DEPTH || raw.segments.is_empty() {
            return Vec::new();
        }
        if raw.global {
            return vec![Resolved::external(raw.segments.clone())];
        }
        let module = &self.modules[self.scopes[scope].module];
        let (first, rest) = (&raw.segments[0], &raw.segments[1..]);
        let absolute = |base: &[String], rest: &[String]| {
            let mut path = vec!["crate".to_owned()];
            path.extend_from_slice(base);
            path.extend_from_slice(rest);
            path
        };
        match first.as_str() {
            "crate" => return self.canonical(absolute(&[], rest), depth + 1),
            "self" => return self.canonical(absolute(&module.path, rest), depth + 1),
            "super" => {
                let supers = raw.segments.iter().take_while(|s| *s == "super").count();
                let Some(kept) = module.path.len().checked_sub(supers) else {
                    return Vec::new();
                };
                return self.canonical(
                    absolute(&module.path[..kept], &raw.segments[supers..]),
                    depth + 1,
                );
            }
            // A type-relative path: what it means depends on the impl, not on a name in scope.
            "Self" => return Vec::new(),
            _ => {}
        }
        let mut current = Some(scope);
        while let Some(id) = current {
            let here = &self.scopes[id];
            if here.items.contains(first) {
                let module = &self.modules[here.module];
                return self.canonical(absolute(&module.path, &raw.segments), depth + 1);
            }
            let skip = matches!(lookup, Lookup::Import { scope, name: Some(name) } if scope == id && name == first);
            if !skip && let Some(targets) = here.imports.get(first) {
                return self.follow(id, first, targets, rest, depth);
            }
            let own_glob = matches!(lookup, Lookup::Import { scope, name: None } if scope == id);
            let from_globs = if own_glob {
                Vec::new()
            } else {
                self.glob_lookup(id, first, depth + 1)
            };
            if !from_globs.is_empty() {
                return from_globs
                    .iter()
                    .flat_map(|found| self.canonical_via(found, rest, depth + 1))
                    .collect();
            }
            current = here.parent;
        }
        // Not a name in scope: an external crate, if the path goes on or is a `use` path. A
        // lone unknown name is a local, a generic or the prelude.
        match lookup {
            Lookup::Member => Vec::new(),
            Lookup::Expression if rest.is_empty() => Vec::new(),
            Lookup::Expression | Lookup::Import { .. } => {
                vec![Resolved::external(raw.segments.clone())]
            }
        }
    }

    /// What `name`, bound in `scope` to `targets`, followed by `rest`, means.
    fn follow(
        &self,
        scope: ScopeId,
        name: &str,
        targets: &[RawPath],
        rest: &[String],
        depth: usize,
    ) -> Vec<Resolved> {
        targets
            .iter()
            .flat_map(|target| {
                // `use tonic;` or `use foo::foo;`: the import does not see itself.
                let lookup = Lookup::Import {
                    scope,
                    name: Some(name),
                };
                self.resolve_in(scope, target, lookup, depth + 1)
            })
            .flat_map(|found| self.canonical_via(&found, rest, depth + 1))
            .collect()
    }

    /// `found` followed by `rest`, made canonical, remembering the modules `found` went through.
    fn canonical_via(&self, found: &Resolved, rest: &[String], depth: usize) -> Vec<Resolved> {
        self.canonical(found.extended(rest), depth)
            .into_iter()
            .map(|mut r| {
                r.via.extend(found.via.iter().cloned());
                r
            })
            .collect()
    }

    /// What a glob of `scope` brings in under `name`: this crate's modules are searched; an
    /// external crate's glob is assumed to supply any name nothing else does.
    fn glob_lookup(&self, scope: ScopeId, name: &str, depth: usize) -> Vec<Resolved> {
        if depth > MAX_DEPTH {
            return Vec::new();
        }
        let mut local = Vec::new();
        let mut external = Vec::new();
        for glob in &self.scopes[scope].globs {
            let lookup = Lookup::Import { scope, name: None };
            for target in self.resolve_in(scope, glob, lookup, depth + 1) {
                match self.module_at(&target.path) {
                    Some(module) => {
                        let one = RawPath {
                            global: false,
                            segments: vec![name.to_owned()],
                        };
                        let inner = self.modules[module].scope;
                        for found in self.resolve_in(inner, &one, Lookup::Member, depth + 1) {
                            local.push(found);
                        }
                    }
                    None => external.push(Resolved {
                        path: target.extended(&[name.to_owned()]),
                        via: target.via.clone(),
                    }),
                }
            }
        }
        if local.is_empty() { external } else { local }
    }

    /// The module of this crate at `path` (`["crate", "upstream"]`), if it is one.
    fn module_at(&self, path: &[String]) -> Option<usize> {
        if path.first().map(String::as_str) != Some("crate") {
            return None;
        }
        let mut module = 0;
        for segment in &path[1..] {
            module = *self.modules[module].children.get(segment)?;
        }
        Some(module)
    }

    /// An absolute path with re-exports followed: through child modules from the root, then
    /// through the `use` (or glob) that binds the next name, until an item is reached. A name
    /// not found (code generated by a macro, such as the protobuf types) ends the walk there.
    fn canonical(&self, path: Vec<String>, depth: usize) -> Vec<Resolved> {
        if path.first().map(String::as_str) != Some("crate") || depth > MAX_DEPTH {
            return vec![Resolved::external(path)];
        }
        let mut module = 0;
        let mut via = BTreeSet::new();
        for (i, segment) in path.iter().enumerate().skip(1) {
            let here = &self.modules[module];
            if let Some(&child) = here.children.get(segment) {
                module = child;
                if self.modules[child].path.len() == 1 {
                    via.insert(segment.clone());
                }
                continue;
            }
            let scope = &self.scopes[here.scope];
            if scope.items.contains(segment) {
                break;
            }
            let rest = &path[i + 1..];
            let found: Vec<Resolved> = match scope.imports.get(segment) {
                Some(targets) => self.follow(here.scope, segment, targets, rest, depth + 1),
                None => self
                    .glob_lookup(here.scope, segment, depth + 1)
                    .iter()
                    .flat_map(|found| self.canonical_via(found, rest, depth + 1))
                    .collect(),
            };
            if found.is_empty() {
                break;
            }
            return found
                .into_iter()
                .map(|mut r| {
                    r.via.extend(via.iter().cloned());
                    r
                })
                .collect();
        }
        vec![Resolved { path, via }]
    }
}

/// How a name is being looked up.
#[derive(Clone, Copy, Debug)]
enum Lookup<'a> {
    /// A path in code: a lone unknown name is a local or the prelude.
    Expression,
    /// A `use` target bound as `name` in `scope` (`None`: a glob's): the binding does not see
    /// itself (nor a glob the scope's globs), and an unknown first segment is an external crate.
    Import {
        scope: ScopeId,
        name: Option<&'a str>,
    },
    /// A name a glob brings in from a module of this crate: only what the module has.
    Member,
}

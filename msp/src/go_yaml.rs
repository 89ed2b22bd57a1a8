//! YAML read the way Go's `gopkg.in/yaml.v2` decodes it into Fabric's configuration
//! structs, for an MSP folder's `config.yaml`: a string field takes a plain scalar's text as
//! written (`007` stays `007`, `True` stays `True`), the null forms give the zero value, a
//! boolean field takes YAML 1.1's words (`yes`, `on`, ...) and refuses a quoted one, and a
//! key given twice takes its last value. A general YAML library resolves scalars to YAML
//! 1.2 types first, which loses the text Go keeps; so this reads the parser's events into
//! a tree of its own.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Most nodes a file may expand to, aliases included: a handful of keys is all a
/// `config.yaml` has, and the bound stops an alias cascade from taking the memory.
const MAX_NODES: usize = 100_000;

/// A YAML node, its scalars as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// A scalar: its text, and whether it was plain (unquoted, not a block), which decides
    /// whether Go resolves it (null, boolean) or takes it as a string.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value of `key` in a mapping, the last one when given twice; `None` when absent
    /// or not a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(pairs) => pairs.iter().rev().find_map(|(k, v)| match k {
                Node::Scalar { text, .. } if text == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Whether Go reads it as null (the zero value): an empty plain scalar, `~`, `null`.
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The node as a Go `string` field: null gives "", any scalar its text.
    pub(crate) fn as_string(&self) -> Result<String, String> {
        match self {
            _ if self.is_null() => Ok(String::new()),
            Node::Scalar { text, .. } => Ok(text.clone()),
            _ => Err("not a string".into()),
        }
    }

    /// The node as a Go `bool` field: null gives false; only plain YAML 1.1 booleans.
    pub(crate) fn as_bool(&self) -> Result<bool, String> {
        match self {
            _ if self.is_null() => Ok(false),
            Node::Scalar { text, plain: true } => match text.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                | "TRUE" => Ok(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                | "FALSE" => Ok(false),
                other => Err(format!("{other:?} is not a boolean")),
            },
            Node::Scalar { text, .. } => Err(format!("{text:?} is quoted, not a boolean")),
            _ => Err("not a boolean".into()),
        }
    }
}

/// The first document of `text`; `None` when it has none.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, String> {
    let mut tree = Tree::default();
    Parser::new_from_str(text)
        .load(&mut tree, false)
        .map_err(|e| e.to_string())?;
    match tree.error {
        Some(e) => Err(e),
        None => Ok(tree.root),
    }
}

/// Builds nodes from the parser's events.
#[derive(Default)]
struct Tree {
    /// Open sequences and mappings, with their anchors.
    open: Vec<(Open, usize)>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
    error: Option<String>,
}

/// A sequence or mapping whose end has not come yet; a mapping's children flat (key,
/// value, key, ...).
enum Open {
    Seq(Vec<Node>),
    Map(Vec<Node>),
}

impl Tree {
    fn done(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.open.last_mut() {
            Some((Open::Seq(items) | Open::Map(items), _)) => items.push(node),
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }

    fn count(&mut self, n: usize) {
        self.nodes += n;
        if self.nodes > MAX_NODES && self.error.is_none() {
            self.error = Some(format!("more than {MAX_NODES} nodes"));
        }
    }
}

fn size(node: &Node) -> usize {
    match node {
        Node::Scalar { .. } => 1,
        Node::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Node::Map(pairs) => 1 + pairs.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
    }
}

impl MarkedEventReceiver for Tree {
    fn on_event(&mut self, ev: Event, _mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.count(1);
                let plain = style == TScalarStyle::Plain;
                self.done(Node::Scalar { text, plain }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1);
                self.open.push((Open::Seq(Vec::new()), anchor));
            }
            Event::MappingStart(anchor, _) => {
                self.count(1);
                self.open.push((Open::Map(Vec::new()), anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.open.pop() {
                    Some((Open::Seq(items), anchor)) => (Node::Seq(items), anchor),
                    Some((Open::Map(flat), anchor)) => {
                        let mut pairs = Vec::with_capacity(flat.len() / 2);
                        let mut it = flat.into_iter();
                        while let Some(k) = it.next() {
                            let null = Node::Scalar {
                                text: String::new(),
                                plain: true,
                            };
                            pairs.push((k, it.next().unwrap_or(null)));
                        }
                        (Node::Map(pairs), anchor)
                    }
                    None => return,
                };
                self.done(node.0, node.1);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => {
                    self.count(size(&node));
                    self.done(node, 0);
                }
                None => self.error = Some(format!("unknown anchor {id}")),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().unwrap()
    }

    #[test]
    fn scalars_keep_their_text_and_quoting() {
        let r = root("a: 007\nb: True\nc: \"yes\"\nd: ~\ne:\nf: 0x1F\n");
        assert_eq!(r.get("a").unwrap().as_string().unwrap(), "007");
        assert_eq!(r.get("b").unwrap().as_string().unwrap(), "True");
        assert_eq!(r.get("f").unwrap().as_string().unwrap(), "0x1F");
        assert_eq!(r.get("d").unwrap().as_string().unwrap(), "");
        assert_eq!(r.get("e").unwrap().as_string().unwrap(), "");
        assert!(r.get("c").unwrap().as_bool().is_err());
        assert!(r.get("b").unwrap().as_bool().unwrap());
        assert!(!r.get("d").unwrap().as_bool().unwrap());
        assert!(r.get("missing").is_none());
    }

    #[test]
    fn the_last_of_a_duplicated_key_wins_and_aliases_expand() {
        let r = root("k: 1\nk: 2\nbase: &b {x: y}\nother: *b\n");
        assert_eq!(r.get("k").unwrap().as_string().unwrap(), "2");
        assert_eq!(
            r.get("other")
                .unwrap()
                .get("x")
                .unwrap()
                .as_string()
                .unwrap(),
            "y"
        );
        assert_eq!(
            root("- [1, 2]\n- 3\n"),
            Node::Seq(vec![
                Node::Seq(vec![
                    Node::Scalar {
                        text: "1".into(),
                        plain: true
                    },
                    Node::Scalar {
                        text: "2".into(),
                        plain: true
                    },
                ]),
                Node::Scalar {
                    text: "3".into(),
                    plain: true
                },
            ])
        );
    }

    #[test]
    fn an_alias_cascade_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&text).unwrap_err().contains("nodes"));
    }

    /// The bound is on nodes once aliases are expanded, each alias counting as every node
    /// it stands for (a sequence or mapping itself, its keys, its values): a document of
    /// exactly `MAX_NODES` is read, one more scalar is refused.
    #[test]
    fn exactly_max_nodes_are_read_and_one_more_is_refused() {
        // The root sequence: 1. `&s`, a sequence of nine scalars: 10. `&m`, a mapping of
        // three scalar pairs and one key holding a sequence of one: 1 + 2 + 2 + 2 + 3 = 10.
        let mut text =
            String::from("- &s [x, x, x, x, x, x, x, x, x]\n- &m {a: x, b: x, c: x, d: [x]}\n");
        let mut nodes = 1 + 10 + 10;
        // Aliases of each, 10 apiece.
        let mut alias = ["*s", "*m"].into_iter().cycle();
        while nodes + 10 <= MAX_NODES {
            text.push_str(&format!("- {}\n", alias.next().expect("cycles")));
            nodes += 10;
        }
        // Scalars up to the bound.
        text.push_str(&"- x\n".repeat(MAX_NODES - nodes));
        let read = parse(&text).expect("read").expect("a document");
        text.push_str("- x\n");
        assert_eq!(
            parse(&text).unwrap_err(),
            format!("more than {MAX_NODES} nodes")
        );
        // And the document read is the whole of it, every alias expanded.
        assert_eq!(size(&read), MAX_NODES);
    }

    #[test]
    fn empty_and_broken_text() {
        assert_eq!(parse("").unwrap(), None);
        // A quoted empty value is a value, not a missing one.
        let r = root("a: \"\"\nb: x\n");
        assert_eq!(r.get("a").unwrap().as_string().unwrap(), "");
        assert_eq!(r.get("b").unwrap().as_string().unwrap(), "x");
        assert!(parse("a: [\n").is_err());
    }
}

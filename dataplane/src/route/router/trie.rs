//! Prefix path matches indexed by path segment.
//!
//! Each node is one segment; a node holds the candidates whose normalised
//! prefix ends there. Walking a request path down the trie visits exactly the
//! prefixes it matches by segment (never `/foo` for `/foobar`), and walking
//! back up visits them longest first, which is their precedence. Segments are
//! taken literally: `/a//b` has an empty segment and does not match `/a/b`.

use foldhash::{HashMap, HashMapExt};

#[derive(Clone, Debug, Default)]
pub(super) struct PrefixTrie {
    /// `nodes[0]` is the root (prefix `/`) once anything is inserted. Node
    /// ids (children, `up`) only ever come from pushes onto this vector, so
    /// indexing with them cannot panic.
    nodes: Vec<Node>,
    /// Each node's children by segment while inserting, parallel to
    /// `nodes`; [`PrefixTrie::finish`] moves them into the nodes as sorted
    /// slices, which take a fraction of a map's memory (at 10,000 rules
    /// the trie was most of the router's).
    building: Vec<HashMap<Box<str>, usize>>,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// Sorted by segment, for a binary search.
    children: Box<[(Box<str>, usize)]>,
    /// Candidate ids, best first once [`PrefixTrie::finish`] has run.
    candidates: Vec<usize>,
    /// The nearest proper ancestor that has candidates, so the way back up
    /// skips intermediate segments no prefix ends at.
    up: Option<usize>,
}

/// Candidate lists of the prefixes a path matches, longest prefix first.
pub(super) struct Matching<'t> {
    nodes: &'t [Node],
    next: Option<usize>,
}

// === impl PrefixTrie ===

impl PrefixTrie {
    /// Adds candidate `id` under `prefix`, which must be normalised and start
    /// with `/`.
    pub(super) fn insert(&mut self, prefix: &str, id: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
            self.building.push(HashMap::new());
        }
        let mut node = 0;
        for segment in segments(prefix) {
            node = match self.building[node].get(segment) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.building.push(HashMap::new());
                    self.building[node].insert(segment.into(), child);
                    child
                }
            };
        }
        self.nodes[node].candidates.push(id);
    }

    /// Orders every node's candidates with `sort` and links each node to its
    /// nearest ancestor with candidates. Call once, after the last insert.
    pub(super) fn finish(&mut self, sort: impl Fn(&mut Vec<usize>)) {
        let building = std::mem::take(&mut self.building);
        self.nodes.shrink_to_fit();
        for (node, children) in self.nodes.iter_mut().zip(building) {
            sort(&mut node.candidates);
            node.candidates.shrink_to_fit();
            let mut children: Vec<_> = children.into_iter().collect();
            children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            node.children = children.into_boxed_slice();
        }
        if self.nodes.is_empty() {
            return;
        }
        // Depth-first from the root, carrying each node's `up`.
        let mut stack = vec![(0, None)];
        while let Some((id, up)) = stack.pop() {
            let node = &mut self.nodes[id];
            node.up = up;
            let below = if node.candidates.is_empty() {
                up
            } else {
                Some(id)
            };
            stack.extend(node.children.iter().map(|&(_, child)| (child, below)));
        }
    }

    /// The candidate lists whose prefix matches `path`, longest first.
    pub(super) fn matching<'t>(&'t self, path: &str) -> Matching<'t> {
        let Some(root) = self.nodes.first() else {
            return Matching {
                nodes: &self.nodes,
                next: None,
            };
        };
        let mut deepest = 0;
        // A path that does not start with `/` (`*`) only matches prefix `/`.
        if let Some(rest) = path.strip_prefix('/') {
            let mut node = root;
            for segment in rest.split('/') {
                let Some((id, child)) = node
                    .children
                    .binary_search_by(|(s, _)| (**s).cmp(segment))
                    .ok()
                    .and_then(|at| node.children.get(at))
                    .and_then(|&(_, id)| Some((id, self.nodes.get(id)?)))
                else {
                    break;
                };
                deepest = id;
                node = child;
            }
        }
        let next = match self.nodes.get(deepest) {
            Some(node) if node.candidates.is_empty() => node.up,
            Some(_) => Some(deepest),
            None => None,
        };
        Matching {
            nodes: &self.nodes,
            next,
        }
    }
}

/// The segments of a normalised prefix: none for `/`, `["foo", "bar"]` for
/// `/foo/bar`.
fn segments(prefix: &str) -> impl Iterator<Item = &str> {
    prefix
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty())
        .into_iter()
        .flat_map(|rest| rest.split('/'))
}

// === impl Matching ===

impl<'t> Iterator for Matching<'t> {
    type Item = &'t [usize];

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.nodes.get(self.next?)?;
        self.next = node.up;
        Some(&node.candidates)
    }
}

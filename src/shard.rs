//! Splitting a run's prompts over CI jobs: `--shard I/N` checks every N-th prompt starting at the
//! I-th (I counts from 1, as test runners' shard flags do), and `merge` puts each shard's prompts
//! back where a single run would have them.
use serde::{Deserialize, Serialize};

/// Shard `index` of `count`, 1 <= index <= count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses "I/N".
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || format!("{text:?} is not a shard; use I/N with 1 <= I <= N, e.g. 2/3");
        let (index, count) = text.split_once('/').ok_or_else(usage)?;
        let (index, count) = (index.trim().parse().map_err(|_| usage())?, count.trim().parse().map_err(|_| usage())?);
        if index == 0 || index > count {
            return Err(usage());
        }
        Ok(Self { index, count })
    }

    /// This shard's items out of the whole run's, in the run's order.
    pub fn select<T>(&self, items: Vec<T>) -> Vec<T> {
        items.into_iter().skip(self.index - 1).step_by(self.count).collect()
    }

    /// Where this shard's `position`-th item sits in the whole run.
    pub fn global_position(&self, position: usize) -> usize {
        self.index - 1 + position * self.count
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_cover_every_item_once_and_put_it_back_in_place() {
        let items: Vec<usize> = (0..10).collect();
        let mut placed = vec![None; items.len()];
        for index in 1..=3 {
            let shard = Shard::parse(&format!("{index}/3")).unwrap();
            for (position, item) in shard.select(items.clone()).into_iter().enumerate() {
                assert!(placed[shard.global_position(position)].replace(item).is_none());
            }
        }
        assert_eq!(placed, items.into_iter().map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn bad_shards_are_refused() {
        for text in ["0/3", "4/3", "1", "a/b", "1/0", "-1/3"] {
            assert!(Shard::parse(text).is_err(), "{text}");
        }
        assert_eq!(Shard::parse("3/3"), Ok(Shard { index: 3, count: 3 }));
    }
}

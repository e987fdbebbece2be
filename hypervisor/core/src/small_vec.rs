//! A vector that keeps its first N items inline and moves to the heap only past them: a
//! device request's buffer lists (a block request is three buffers) are built and dropped
//! on every request, and a heap allocation and free cost more than the rest of the list's
//! handling.

use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};

#[derive(Clone, Debug)]
pub enum SmallVec<T: Copy + Default, const N: usize> {
    Inline { items: [T; N], len: usize },
    Heap(Vec<T>),
}

impl<T: Copy + Default, const N: usize> SmallVec<T, N> {
    pub fn new() -> Self {
        SmallVec::Inline { items: [T::default(); N], len: 0 }
    }

    pub fn push(&mut self, item: T) {
        match self {
            SmallVec::Inline { items, len } if *len < N => {
                items[*len] = item;
                *len += 1;
            }
            SmallVec::Inline { items, len } => {
                let mut v = Vec::with_capacity(2 * N.max(1));
                v.extend_from_slice(&items[..*len]);
                v.push(item);
                *self = SmallVec::Heap(v);
            }
            SmallVec::Heap(v) => v.push(item),
        }
    }

    /// Makes room for `additional` more items at once (a long list grows once instead of
    /// doubling its way there, a reallocation and copy each time).
    pub fn reserve(&mut self, additional: usize) {
        match self {
            SmallVec::Inline { items, len } if *len + additional > N => {
                let mut v = Vec::with_capacity(*len + additional);
                v.extend_from_slice(&items[..*len]);
                *self = SmallVec::Heap(v);
            }
            SmallVec::Inline { .. } => {}
            SmallVec::Heap(v) => v.reserve(additional),
        }
    }

    /// Appends `more` (one copy, not a push per item).
    pub fn extend_from_slice(&mut self, more: &[T]) {
        self.reserve(more.len());
        match self {
            SmallVec::Inline { items, len } => {
                items[*len..*len + more.len()].copy_from_slice(more);
                *len += more.len();
            }
            SmallVec::Heap(v) => v.extend_from_slice(more),
        }
    }

    /// Empties it (a heap vector keeps its capacity).
    pub fn clear(&mut self) {
        match self {
            SmallVec::Inline { len, .. } => *len = 0,
            SmallVec::Heap(v) => v.clear(),
        }
    }
}

impl<T: Copy + Default, const N: usize> Default for SmallVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> Deref for SmallVec<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            SmallVec::Inline { items, len } => &items[..*len],
            SmallVec::Heap(v) => v,
        }
    }
}

impl<T: Copy + Default, const N: usize> DerefMut for SmallVec<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            SmallVec::Inline { items, len } => &mut items[..*len],
            SmallVec::Heap(v) => v,
        }
    }
}

impl<T: Copy + Default, const N: usize> From<Vec<T>> for SmallVec<T, N> {
    fn from(v: Vec<T>) -> Self {
        v.into_iter().collect()
    }
}

impl<T: Copy + Default, const N: usize> FromIterator<T> for SmallVec<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut s = Self::new();
        iter.into_iter().for_each(|i| s.push(i));
        s
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for SmallVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Copy + Default + Eq, const N: usize> Eq for SmallVec<T, N> {}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq<Vec<T>> for SmallVec<T, N> {
    fn eq(&self, other: &Vec<T>) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn inline_up_to_n_then_on_the_heap_in_order() {
        let mut s: SmallVec<u32, 3> = SmallVec::new();
        assert!(s.is_empty());
        for i in 0..3 {
            s.push(i);
        }
        assert!(matches!(s, SmallVec::Inline { len: 3, .. }));
        s.push(3);
        s[0] = 10;
        assert!(matches!(s, SmallVec::Heap(_)));
        assert_eq!(s, vec![10, 1, 2, 3]);
        s.clear();
        assert!(s.is_empty());
        s.push(7);
        assert_eq!(&s[..], &[7]);
        let from: SmallVec<u32, 2> = vec![1, 2, 3].into();
        assert_eq!(from, vec![1, 2, 3]);
        assert_eq!(SmallVec::<u32, 2>::from(vec![]), SmallVec::new());
    }

    #[test]
    fn reserve_moves_to_the_heap_once_and_keeps_the_items() {
        let mut s: SmallVec<u32, 3> = SmallVec::new();
        s.reserve(3);
        assert!(matches!(s, SmallVec::Inline { len: 0, .. }), "room inline: stays");
        s.push(1);
        s.reserve(10);
        let SmallVec::Heap(v) = &s else { panic!("not moved to the heap") };
        assert!(v.capacity() >= 11);
        let before = v.as_ptr();
        for i in 2..=11 {
            s.push(i);
        }
        let SmallVec::Heap(v) = &s else { panic!() };
        assert_eq!(v.as_ptr(), before, "no reallocation within the reserved room");
        assert_eq!(s, (1..=11).collect::<Vec<_>>());
    }
}

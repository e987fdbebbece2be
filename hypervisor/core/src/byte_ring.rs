//! The last N bytes of a stream (a console's tail), kept in place: new bytes overwrite the
//! oldest, and the kept ones come out oldest first as two slices.

pub struct ByteRing<const N: usize> {
    buf: [u8; N],
    /// Where the next byte goes.
    head: usize,
    full: bool,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    pub const fn new() -> Self {
        ByteRing { buf: [0; N], head: 0, full: false }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[self.head] = b;
            self.head = (self.head + 1) % N;
            self.full |= self.head == 0;
        }
    }

    /// The last `max` bytes kept, oldest first, in two parts.
    pub fn last(&self, max: usize) -> (&[u8], &[u8]) {
        let len = if self.full { N } else { self.head };
        let n = len.min(max);
        if n <= self.head {
            (&[], &self.buf[self.head - n..self.head])
        } else {
            (&self.buf[N - (n - self.head)..], &self.buf[..self.head])
        }
    }

    /// Everything kept, oldest first.
    pub fn all(&self) -> (&[u8], &[u8]) {
        self.last(N)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_in_order() {
        let mut r = ByteRing::<4>::new();
        assert_eq!(r.all(), (&b""[..], &b""[..]));
        r.push(b"ab");
        assert_eq!(r.all(), (&b""[..], &b"ab"[..]));
        r.push(b"cdef");
        let (a, b) = r.all();
        assert_eq!([a, b].concat(), b"cdef");
        r.push(b"g");
        let (a, b) = r.all();
        assert_eq!([a, b].concat(), b"defg");
        let (a, b) = r.last(2);
        assert_eq!([a, b].concat(), b"fg");
    }
}

//! The codec every generated fedra.v1 service and client uses: prost's, with a small
//! initial buffer.
//!
//! tonic gives each call an encode buffer (and each streamed request a decode buffer) of
//! 8 KiB up front. A connected sidecar keeps one call open while idle (its `Subscribe`
//! stream), so at 10,000 sidecars those buffers alone pin 80 MiB in the coordinator for
//! tasks of a few hundred bytes. Buffers still grow to whatever a message needs (a 1 MiB
//! parameter chunk reserves 1 MiB either way), so large transfers are unaffected.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer of a call: a task, a heartbeat or a status fits.
pub const INITIAL_BUFFER_BYTES: usize = 1024;
/// tonic's default: a stream yields to the transport after this many buffered bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`INITIAL_BUFFER_BYTES`] buffers (see the module doc).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER_BYTES, YIELD_THRESHOLD)
}

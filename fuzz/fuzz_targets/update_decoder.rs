//! The update-stream decoder: the input is cut into (offset, length, payload) chunks fed to
//! the same cursor, decoder and digest the coordinator uses. Accepted ranges must be in
//! bounds and contiguous, and the stream is complete exactly when they cover every value.
#![no_main]

use fedra_proto::chunking::{ChunkCursor, StreamDigest, decode_le_into};
use fedra_proto::pb::ParamChunk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let total = u64::from(u16::from_le_bytes([data[0], data[1]]) % 4096);
    let mut rest = &data[2..];
    let mut cursor = ChunkCursor::new(total);
    let mut values = vec![0f32; total as usize];
    let mut digest = StreamDigest::default();
    let mut covered = 0u64;
    while rest.len() >= 4 {
        let offset = u64::from(u16::from_le_bytes([rest[0], rest[1]]));
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let chunk = ParamChunk { offset, data: rest[4..4 + len].to_vec().into(), ..ParamChunk::default() };
        rest = &rest[4 + len..];
        if let Ok(range) = cursor.accept(&chunk) {
            assert_eq!(range.start as u64, covered);
            assert!(range.end as u64 <= total);
            decode_le_into(&chunk.data, &mut values[range.clone()]);
            digest.update(&chunk.data);
            covered = range.end as u64;
        }
    }
    assert_eq!(cursor.finish().is_ok(), covered == total);
    let _ = digest.finish_hex();
});

//! The public refresh store conformance suite on the memory store.

use portcullis::refresh::MemoryRefreshStore;

portcullis::refresh::refresh_store_conformance!(|| async { MemoryRefreshStore::new() });

mod family_cap {
    use portcullis::refresh::MemoryRefreshStore;

    portcullis::refresh::refresh_store_family_cap_conformance!(|| async {
        MemoryRefreshStore::new()
    });
}

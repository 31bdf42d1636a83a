//! The custom store shown in the `store` module's docs passes the
//! conformance suite: the example is a working store, not a sketch.
#![cfg(feature = "testing")]

include!("support/hash_map_store.rs");

portcullis_session::session_store_conformance!(|clock| async move { HashMapStore::new(clock) });

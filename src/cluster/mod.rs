pub mod kv;

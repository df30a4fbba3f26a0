//! The client library: what an app uses to talk to wa-chat.

//! Fly Machines API client.

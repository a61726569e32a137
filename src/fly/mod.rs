//! Fly Machines API client.


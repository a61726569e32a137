//! Fly Machines API simulator.

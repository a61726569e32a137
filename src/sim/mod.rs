//! Fly Machines API simulator.


//! Integration tests: one binary, one module per area.

mod calibrate;
mod cli;
mod corpus;
mod feed;
mod fuzz;
mod importer;
mod lifecycle;
mod properties;
mod readers;
mod safety;
mod util;

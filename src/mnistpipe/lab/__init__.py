"""Tools that study the library: the benchmark, the search-setup comparison, the seed grid, the t-SNE comparison."""

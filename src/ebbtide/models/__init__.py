"""Model families behind one interface; `btyd_math` holds the BG/NBD and Pareto/NBD maths."""

/* placeholder: the sample layer generator lands with the loaders. */
int main(void) { return 0; }

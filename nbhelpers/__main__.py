from nbhelpers.cli import main

raise SystemExit(main())
